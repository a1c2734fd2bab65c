//! Shared fixture for the black-box tests: start a real `switchboard` node and talk to it over
//! real sockets.
//!
//! # Layout
//! - [`Node`]: spawns the built binary on `127.0.0.1:0`, waits for its `listening` log line and keeps
//!   its output so a test can check that nothing panicked.
//! - Raw HTTP/1.1 over a plain [`TcpStream`] ([`raw_request`], [`http_get`], [`http_post`]): the
//!   server must also be driven with requests no well-behaved client would send.
//! - Engine.IO clients: [`Polling`] (long-polling session), [`Ws`] (websocket via
//!   tokio-tungstenite), [`RawWs`] (hand-written frames, for what tungstenite refuses to send, such
//!   as invalid UTF-8 in a text frame).
//! - [`Canary`]: a well-behaved Socket.IO client that keeps a session alive in the background so a
//!   test can prove other sessions are unaffected by a misbehaving one.
//!
//! - [`faults`] and [`redis_ha`]: servers of the test's own (Redis, PostgreSQL, a TLS-only Redis
//!   with a test CA, a Sentinel group) and the durable-message loss checker.
//!
//! Every wait is bounded: a broken server makes a test fail, never hang. Fixtures the actor
//! suites use too (throwaway databases, a TCP proxy, scratch directories) live in
//! `switchboard-test-support`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, Stream, StreamExt};
use serde_json::Value;
use switchboard_test_support::ScratchDir;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub mod faults;
pub mod redis_ha;

/// How long any single wait in a test may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// How long a node may take to print its `listening` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments that put a node in conformance mode (fast heartbeat, echo handlers).
pub const CONFORMANCE: &[&str] = &["--conformance"];

/// Await `fut` for at most [`TIMEOUT`], panicking with `what` when it takes longer.
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    within_for(TIMEOUT, what, fut).await
}

/// Await `fut` for at most `limit`, panicking with `what` when it takes longer.
pub async fn within_for<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    // Boxed: nested test futures are large in debug builds and would overflow the test thread's
    // stack if every layer lived inline.
    match tokio::time::timeout(limit, Box::pin(fut)).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Node

/// A running `switchboard` process, killed when dropped.
pub struct Node {
    addr: SocketAddr,
    logs: Arc<Mutex<String>>,
    child: Child,
    /// The node's working directory; declared last so it is removed after the child is killed.
    _scratch: ScratchDir,
}

/// Path of the binary under test: `$SWITCHBOARD_BIN`, or the workspace's debug build.
pub fn binary_path() -> PathBuf {
    match std::env::var_os("SWITCHBOARD_BIN") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/switchboard"),
    }
}

/// Remove this process's `SWITCHBOARD_*` variables from what `cmd` passes on, so that only the
/// settings a test gives reach the node.
pub fn without_switchboard_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SWITCHBOARD_") {
            cmd.env_remove(key);
        }
    }
}

impl Node {
    /// Start a node with `--listen 127.0.0.1:0` plus `args`, and wait until it listens.
    pub async fn start(args: &[&str]) -> Node {
        Self::start_binary(&binary_path(), args).await
    }

    /// Like [`Node::start`], with extra environment variables (not `SWITCHBOARD_*` ones, which
    /// tests give as flags: e.g. the OpenTelemetry SDK's `OTEL_*`).
    pub async fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Node {
        Self::start_binary_with_env(&binary_path(), args, env).await
    }

    /// Like [`Node::start`], with another build of the binary (e.g. a fault-injection build).
    pub async fn start_binary(bin: &std::path::Path, args: &[&str]) -> Node {
        Self::start_binary_with_env(bin, args, &[]).await
    }

    /// [`Node::start_binary`] with extra environment variables.
    pub async fn start_binary_with_env(
        bin: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Node {
        assert!(
            bin.is_file(),
            "switchboard binary not found at {}: run `cargo build -p switchboard` first \
             (or point SWITCHBOARD_BIN at it)",
            bin.display()
        );
        // Each node runs in its own scratch directory, so its default SQLite file is its own.
        let scratch = ScratchDir::new();
        let mut cmd = Command::new(bin);
        cmd.current_dir(&scratch.0);
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // The node reads its config from SWITCHBOARD_* too; only the flags given here may count.
        without_switchboard_env(&mut cmd);
        cmd.envs(env.iter().copied());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", bin.display()));

        let logs = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = oneshot::channel();
        // unwrap: both pipes were requested above.
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        tokio::spawn(drain(stdout, logs.clone(), Some(addr_tx)));
        tokio::spawn(drain(stderr, logs.clone(), None));

        let addr = match tokio::time::timeout(START_TIMEOUT, addr_rx).await {
            Ok(Ok(addr)) => addr,
            Ok(Err(_)) => {
                let status = child.wait().await;
                panic!(
                    "node exited ({status:?}) before logging \"listening\"; args {args:?}; output:\n{}",
                    lock(&logs)
                )
            }
            Err(_) => panic!(
                "node did not log \"listening\" within {START_TIMEOUT:?}; args {args:?}; output:\n{}",
                lock(&logs)
            ),
        };
        Node {
            addr,
            logs,
            child,
            _scratch: scratch,
        }
    }

    /// The address the node listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the node is running")
    }

    /// Everything the node has written to stdout and stderr so far.
    pub fn logs(&self) -> String {
        lock(&self.logs).clone()
    }

    /// Panic if the captured output contains a Rust panic message.
    pub fn assert_no_panic(&self) {
        let logs = self.logs();
        assert!(
            !logs.contains("panicked at"),
            "the node panicked; output:\n{logs}"
        );
    }

    /// Kill the process (SIGKILL, like a crash or `kill -9`) and wait until it is gone, so a
    /// node started next on the same database or port never overlaps with it.
    pub async fn kill(mut self) {
        within("the node to exit after SIGKILL", self.child.kill())
            .await
            .unwrap_or_else(|e| panic!("cannot kill the node: {e}"));
    }

    /// Check the node is still running and answering `/health`, then that nothing panicked.
    pub async fn assert_healthy(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("the node exited ({status}); output:\n{}", self.logs());
        }
        let res = http_get(self.addr, "/health").await;
        assert_eq!(res.status, 200, "GET /health: {res:?}");
        // Not an assertion: give the drain tasks a moment to read a panic message that was written
        // just before /health answered.
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.assert_no_panic();
    }
}

fn lock(logs: &Mutex<String>) -> std::sync::MutexGuard<'_, String> {
    // A poisoned log buffer still holds useful text.
    logs.lock().unwrap_or_else(|e| e.into_inner())
}

/// Copy `pipe` into `logs` line by line; on stdout, report the `listening` address once.
async fn drain(
    pipe: impl AsyncRead + Unpin,
    logs: Arc<Mutex<String>>,
    mut addr_tx: Option<oneshot::Sender<SocketAddr>>,
) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        lock(&logs).push_str(&text);
        if addr_tx.is_some()
            && let Some(addr) = listening_addr(&text)
            && let Some(tx) = addr_tx.take()
        {
            let _ = tx.send(addr);
        }
    }
}

/// The `addr` of a JSON log line whose `message` is `listening`.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let json: Value = serde_json::from_str(line.trim()).ok()?;
    if json.get("message")?.as_str()? != "listening" {
        return None;
    }
    json.get("addr")?.as_str()?.parse().ok()
}

/// Number of live Engine.IO sessions the node reports on `GET /health`.
pub async fn health_sessions(addr: SocketAddr) -> u64 {
    let res = http_get(addr, "/health").await;
    assert_eq!(res.status, 200, "GET /health: {res:?}");
    let json = res.json();
    json["sessions"]
        .as_u64()
        .unwrap_or_else(|| panic!("GET /health has no numeric `sessions`: {json}"))
}

/// Wait (bounded) until `/health` reports exactly `expected` sessions; panic with the last count.
pub async fn wait_for_sessions(addr: SocketAddr, expected: u64) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let got = health_sessions(addr).await;
        if got == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/health reports {got} sessions after {TIMEOUT:?}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers in arrival order, names as sent.
    pub headers: Vec<(String, String)>,
    /// Body, de-chunked when the server used chunked encoding.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {self:?}"))
    }

    /// Assert this is an Engine.IO error response: `status` and body `{"code":code,"message":…}`.
    pub fn assert_eio_error(&self, status: u16, code: u64, message: &str) {
        assert_eq!(self.status, status, "status of {self:?}");
        let content_type = self.header("content-type").unwrap_or("");
        assert!(
            content_type.starts_with("application/json"),
            "content-type of an error is {content_type:?}, expected application/json: {self:?}"
        );
        assert_eq!(
            self.json(),
            serde_json::json!({ "code": code, "message": message }),
            "error body"
        );
    }
}

/// Send `request` verbatim on a new connection and read one response (bounded by [`TIMEOUT`] ×2).
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> HttpResponse {
    within_for(2 * TIMEOUT, "an HTTP response", async {
        let mut stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream
            .write_all(request)
            .await
            .unwrap_or_else(|e| panic!("write request: {e}"));
        read_response(&mut stream).await
    })
    .await
}

/// `GET path` with `Connection: close`.
pub async fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    http_get_with_headers(addr, path, &[]).await
}

/// `GET path` with extra request headers.
pub async fn http_get_with_headers(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    raw_request(addr, req.as_bytes()).await
}

/// `POST path` with a body and content type.
pub async fn http_post(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> HttpResponse {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    raw_request(addr, &req).await
}

/// Read one HTTP/1.1 response (Content-Length, chunked, or until EOF).
async fn read_response(stream: &mut TcpStream) -> HttpResponse {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(pos) = find(&buf, b"\r\n\r\n") {
            break pos;
        }
        if read_more(stream, &mut buf).await == 0 {
            panic!(
                "connection closed before a full response head; got {:?}",
                String::from_utf8_lossy(&buf)
            );
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut rest = buf[head_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut res = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    let chunked = res
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = res
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok());
    res.body = if chunked {
        read_chunked(stream, rest).await
    } else if let Some(length) = length {
        while rest.len() < length {
            if read_more(stream, &mut rest).await == 0 {
                panic!(
                    "connection closed after {} of {length} body bytes",
                    rest.len()
                );
            }
        }
        rest.truncate(length);
        rest
    } else {
        while read_more(stream, &mut rest).await > 0 {}
        rest
    };
    res
}

async fn read_chunked(stream: &mut TcpStream, mut buf: Vec<u8>) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(pos) = find(&buf, b"\r\n") {
                break pos;
            }
            assert!(read_more(stream, &mut buf).await > 0, "EOF in chunk size");
        };
        let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
        buf.drain(..line_end + 2);
        if size == 0 {
            return body;
        }
        while buf.len() < size + 2 {
            assert!(read_more(stream, &mut buf).await > 0, "EOF in chunk");
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

/// Read more bytes into `buf`; 0 at EOF (a reset counts as EOF: Node-style servers destroy the
/// socket right after an error response).
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> usize {
    buf.reserve(16 * 1024);
    stream.read_buf(buf).await.unwrap_or(0)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// Engine.IO long-polling

/// Engine.IO record separator in polling payloads.
pub const RS: char = '\u{1e}';

/// Path of a fresh polling handshake on `/socket.io/`.
pub const POLLING_HANDSHAKE: &str = "/socket.io/?EIO=4&transport=polling";

/// Content type the JS client uses for polling POSTs.
pub const TEXT_PLAIN: &str = "text/plain;charset=UTF-8";

/// Do a polling handshake; return the parsed open-packet JSON and the sid. Asserts 200 and `0{…}`.
pub async fn polling_handshake(addr: SocketAddr) -> (Value, String) {
    let res = http_get(addr, POLLING_HANDSHAKE).await;
    assert_eq!(res.status, 200, "polling handshake: {res:?}");
    let text = res.text();
    let json = text
        .strip_prefix('0')
        .and_then(|j| serde_json::from_str::<Value>(j).ok())
        .unwrap_or_else(|| panic!("polling handshake body is not `0{{json}}`: {text:?}"));
    let sid = json["sid"]
        .as_str()
        .unwrap_or_else(|| panic!("handshake has no string sid: {json}"))
        .to_owned();
    (json, sid)
}

/// An Engine.IO long-polling session on `/socket.io/`.
pub struct Polling {
    /// Node address.
    pub addr: SocketAddr,
    /// Engine.IO session id.
    pub sid: String,
    /// The open packet's JSON.
    pub handshake: Value,
}

impl Polling {
    /// Handshake a new session.
    pub async fn open(addr: SocketAddr) -> Polling {
        let (handshake, sid) = polling_handshake(addr).await;
        Polling {
            addr,
            sid,
            handshake,
        }
    }

    /// `/socket.io/?EIO=4&transport=polling&sid=<sid>`.
    pub fn path(&self) -> String {
        format!("{POLLING_HANDSHAKE}&sid={}", self.sid)
    }

    /// One long-poll GET.
    pub async fn get(&self) -> HttpResponse {
        http_get(self.addr, &self.path()).await
    }

    /// One POST of `body` as text.
    pub async fn post(&self, body: &str) -> HttpResponse {
        http_post(self.addr, &self.path(), TEXT_PLAIN, body.as_bytes()).await
    }

    /// POST `body` and assert the server accepted it (200 `ok`).
    pub async fn post_ok(&self, body: &str) {
        let res = self.post(body).await;
        assert_eq!(res.status, 200, "POST {body:?}: {res:?}");
        assert_eq!(res.text(), "ok", "POST {body:?} response body");
    }

    /// One GET, asserting 200, split into records.
    pub async fn get_records(&self) -> Vec<String> {
        let res = self.get().await;
        assert_eq!(res.status, 200, "polling GET: {res:?}");
        res.text().split(RS).map(str::to_owned).collect()
    }

    /// GET until `n` records other than pings arrived, answering each ping `2` with a `3`.
    pub async fn recv(&self, n: usize) -> Vec<String> {
        within("polling records", async {
            let mut out = Vec::new();
            while out.len() < n {
                for record in self.get_records().await {
                    if record == "2" {
                        self.post_ok("3").await;
                    } else {
                        out.push(record);
                    }
                }
            }
            out
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// WebSocket via tokio-tungstenite

/// The websocket stream type of tokio-tungstenite's `connect_async`.
pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a websocket client saw next.
#[derive(Debug, Clone, PartialEq)]
pub enum WsEvent {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Bytes),
    /// A Close frame: code and reason (None when the frame had no code).
    Close(Option<(u16, String)>),
    /// The connection ended without a Close frame, or with an error.
    Ended(String),
}

/// Query of a websocket-only Engine.IO connection on `/socket.io/`.
pub const WS_PATH: &str = "/socket.io/?EIO=4&transport=websocket";

/// A websocket client speaking Engine.IO text frames.
pub struct Ws {
    /// The underlying stream, for tests that need more than the helpers.
    pub stream: WsStream,
}

/// Open `ws://addr/socket.io/?EIO=4&transport=websocket` and read the open packet: returns the
/// client and the handshake JSON.
pub async fn ws_connect(addr: SocketAddr) -> (Ws, Value) {
    let mut ws = Ws::connect(addr, WS_PATH).await;
    let open = ws.recv_text().await;
    let json = open
        .strip_prefix('0')
        .and_then(|j| serde_json::from_str::<Value>(j).ok())
        .unwrap_or_else(|| panic!("first websocket frame is not `0{{json}}`: {open:?}"));
    (ws, json)
}

impl Ws {
    /// Open a websocket to `path` (with query) and read nothing.
    pub async fn connect(addr: SocketAddr, path: &str) -> Ws {
        let url = format!("ws://{addr}{path}");
        let (stream, _) = within(
            "websocket handshake",
            tokio_tungstenite::connect_async(&url),
        )
        .await
        .unwrap_or_else(|e| panic!("websocket handshake to {url}: {e}"));
        Ws { stream }
    }

    /// Send a text frame; panics on failure.
    pub async fn send_text(&mut self, text: &str) {
        within("websocket send", self.stream.send(Message::text(text)))
            .await
            .unwrap_or_else(|e| panic!("websocket send {:?}: {e}", truncate(text)));
    }

    /// Send a binary frame; panics on failure.
    pub async fn send_binary(&mut self, data: &[u8]) {
        within(
            "websocket send",
            self.stream.send(Message::binary(data.to_vec())),
        )
        .await
        .unwrap_or_else(|e| panic!("websocket send binary: {e}"));
    }

    /// The next event (websocket-level ping/pong frames are skipped).
    pub async fn recv(&mut self) -> WsEvent {
        within("a websocket frame", next_event(&mut self.stream)).await
    }

    /// The next frame, which must be text.
    pub async fn recv_text(&mut self) -> String {
        match self.recv().await {
            WsEvent::Text(t) => t,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next text frame that is not an Engine.IO ping; pings are answered with `3`.
    pub async fn recv_text_answering_pings(&mut self) -> String {
        loop {
            let text = self.recv_text().await;
            if text == "2" {
                self.send_text("3").await;
            } else {
                return text;
            }
        }
    }

    /// The next event other than an Engine.IO ping (answered with `3`).
    pub async fn recv_answering_pings(&mut self) -> WsEvent {
        loop {
            match self.recv().await {
                WsEvent::Text(t) if t == "2" => {
                    // The server may be closing already; a failed pong is not this helper's concern.
                    let _ = self.stream.send(Message::text("3")).await;
                }
                other => return other,
            }
        }
    }

    /// Send `messages` in order while reading, and return the first event that is not an
    /// Engine.IO ping together with the first send error. Sending and reading run concurrently, so
    /// a server that answers a huge frame with a Close before reading all of it cannot stall the
    /// test. Pings are not answered meanwhile.
    pub async fn send_and_recv(self, messages: Vec<Message>) -> (WsEvent, Option<String>) {
        let (mut sink, mut stream) = self.stream.split();
        let send = async {
            for message in messages {
                if let Err(e) = sink.send(message).await {
                    return Some(e.to_string());
                }
            }
            None
        };
        let recv = async {
            loop {
                match next_event(&mut stream).await {
                    WsEvent::Text(t) if t == "2" => continue,
                    other => return other,
                }
            }
        };
        within("the reply to the frames sent", async {
            tokio::join!(recv, send)
        })
        .await
    }

    /// Join namespace `/` (`40`): assert `40{"sid":…}` then `42["auth",{}]`; return the socket id.
    pub async fn connect_default_namespace(&mut self) -> String {
        self.send_text("40").await;
        let reply = self.recv_text_answering_pings().await;
        let sid = connect_reply_sid(&reply, "");
        let auth = self.recv_text_answering_pings().await;
        assert_eq!(auth, r#"42["auth",{}]"#, "event after CONNECT");
        sid
    }
}

/// Parse a `40[nsp,]{"sid":…}` CONNECT reply (`nsp_prefix` is e.g. `/custom,` or empty) and
/// return the socket id.
pub fn connect_reply_sid(reply: &str, nsp_prefix: &str) -> String {
    let json = reply
        .strip_prefix("40")
        .and_then(|r| r.strip_prefix(nsp_prefix))
        .and_then(|j| serde_json::from_str::<Value>(j).ok())
        .unwrap_or_else(|| panic!("expected `40{nsp_prefix}{{\"sid\":…}}`, got {reply:?}"));
    let obj = json
        .as_object()
        .unwrap_or_else(|| panic!("CONNECT reply payload is not an object: {reply:?}"));
    // `pid` is there while connection state recovery is on (the default).
    let keys = obj.keys().collect::<Vec<_>>();
    assert!(
        keys == ["sid"] || keys == ["sid", "pid"],
        "CONNECT reply keys: {reply:?}"
    );
    if let Some(pid) = obj.get("pid") {
        assert!(
            pid.as_str().is_some_and(|p| !p.is_empty()),
            "CONNECT reply pid is not a non-empty string: {reply:?}"
        );
    }
    let sid = obj["sid"]
        .as_str()
        .unwrap_or_else(|| panic!("CONNECT reply sid is not a string: {reply:?}"));
    assert!(!sid.is_empty(), "CONNECT reply sid is empty");
    sid.to_owned()
}

async fn next_event<S>(stream: &mut S) -> WsEvent
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    loop {
        return match stream.next().await {
            Some(Ok(Message::Text(t))) => WsEvent::Text(t.as_str().to_owned()),
            Some(Ok(Message::Binary(b))) => WsEvent::Binary(b),
            Some(Ok(Message::Close(frame))) => {
                WsEvent::Close(frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())))
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Err(e)) => WsEvent::Ended(e.to_string()),
            None => WsEvent::Ended("stream ended".to_owned()),
        };
    }
}

fn truncate(text: &str) -> String {
    if text.len() <= 120 {
        text.to_owned()
    } else {
        let mut end = 120;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &text[..end], text.len())
    }
}

// ---------------------------------------------------------------------------------------------
// Canary

/// A well-behaved Socket.IO client on `/` (websocket) that answers pings in the background and
/// can prove, at any moment, that it still round-trips `message` → `message-back` (conformance).
pub struct Canary {
    outgoing: mpsc::UnboundedSender<String>,
    incoming: mpsc::UnboundedReceiver<WsEvent>,
    task: JoinHandle<()>,
    count: u64,
}

impl Canary {
    /// Connect over websocket and join `/`.
    pub async fn connect(addr: SocketAddr) -> Canary {
        let (mut ws, _) = ws_connect(addr).await;
        ws.connect_default_namespace().await;
        let (outgoing, mut out_rx) = mpsc::unbounded_channel::<String>();
        let (in_tx, incoming) = mpsc::unbounded_channel();
        let mut stream = ws.stream;
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    event = next_event(&mut stream) => {
                        let done = matches!(event, WsEvent::Close(_) | WsEvent::Ended(_));
                        if event == WsEvent::Text("2".to_owned()) {
                            if let Err(e) = stream.send(Message::text("3")).await {
                                let _ = in_tx.send(WsEvent::Ended(format!("pong failed: {e}")));
                                return;
                            }
                            continue;
                        }
                        let _ = in_tx.send(event);
                        if done {
                            return;
                        }
                    }
                    text = out_rx.recv() => {
                        let Some(text) = text else { return };
                        if let Err(e) = stream.send(Message::text(text)).await {
                            let _ = in_tx.send(WsEvent::Ended(format!("send failed: {e}")));
                            return;
                        }
                    }
                }
            }
        });
        Canary {
            outgoing,
            incoming,
            task,
            count: 0,
        }
    }

    /// Send `42["message",tag,n]` and assert the very next packet is `42["message-back",tag,n]`.
    pub async fn round_trip(&mut self, tag: &str) {
        self.count += 1;
        let tag_json = Value::from(tag);
        let n = self.count;
        let send = format!(r#"42["message",{tag_json},{n}]"#);
        let expect = format!(r#"42["message-back",{tag_json},{n}]"#);
        assert!(
            self.outgoing.send(send).is_ok(),
            "canary connection is gone (before {tag})"
        );
        let got = within(
            &format!("the canary's message-back ({tag})"),
            self.incoming.recv(),
        )
        .await;
        assert_eq!(
            got,
            Some(WsEvent::Text(expect)),
            "canary round trip ({tag})"
        );
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-written websocket frames

/// Websocket opcode of a text frame.
pub const OP_TEXT: u8 = 0x1;
/// Websocket opcode of a binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Websocket opcode of a close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Websocket opcode of a ping frame.
pub const OP_PING: u8 = 0x9;
/// Websocket opcode of a pong frame.
pub const OP_PONG: u8 = 0xA;

/// A websocket client that writes its own frames, so it can send what tungstenite refuses to
/// (e.g. a text frame that is not UTF-8).
pub struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    /// Perform the HTTP upgrade to `path` by hand; asserts `101`.
    pub async fn connect(addr: SocketAddr, path: &str) -> RawWs {
        Self::connect_with_headers(addr, path, "").await
    }

    /// Write one final, masked frame.
    pub async fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            // Casts: each arm bounds the length to the field it is written into.
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= usize::from(u16::MAX) => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        within("raw websocket write", self.stream.write_all(&frame))
            .await
            .unwrap_or_else(|e| panic!("raw websocket write: {e}"));
    }

    /// Write a text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.send_frame(OP_TEXT, text.as_bytes()).await;
    }

    /// Read one frame: `(opcode, payload)`, or None when the connection ended.
    pub async fn recv_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        within("a raw websocket frame", async {
            loop {
                if let Some((frame, used)) = parse_frame(&self.buf) {
                    self.buf.drain(..used);
                    return Some(frame);
                }
                if read_more(&mut self.stream, &mut self.buf).await == 0 {
                    return None;
                }
            }
        })
        .await
    }

    /// The next text frame other than an Engine.IO ping (answered `3`); websocket pings are
    /// answered too. Panics on anything else.
    pub async fn recv_text_answering_pings(&mut self) -> String {
        loop {
            match self.recv_frame().await {
                Some((OP_TEXT, data)) if data == b"2" => self.send_text("3").await,
                Some((OP_TEXT, data)) => {
                    return String::from_utf8(data)
                        .unwrap_or_else(|e| panic!("server sent invalid UTF-8 text: {e}"));
                }
                Some((OP_PING, data)) => self.send_frame(OP_PONG, &data).await,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Read until the server's Close frame (answering pings); its code and reason, or None when
    /// the connection ended without one. Text frames other than pings are a failure.
    pub async fn expect_close(&mut self) -> Option<(u16, String)> {
        loop {
            match self.recv_frame().await {
                None => return None,
                Some((OP_CLOSE, data)) => {
                    if data.len() < 2 {
                        return Some((1005, String::new()));
                    }
                    let code = u16::from_be_bytes([data[0], data[1]]);
                    return Some((code, String::from_utf8_lossy(&data[2..]).into_owned()));
                }
                Some((OP_TEXT, data)) if data == b"2" => {
                    // The server may be closing; a failed pong is not this helper's concern.
                    let _ = self.try_pong().await;
                }
                Some((OP_PING, _)) => {}
                Some((op, data)) => panic!(
                    "expected a Close frame, got opcode {op}: {:?}",
                    String::from_utf8_lossy(&data)
                ),
            }
        }
    }

    /// Perform the HTTP upgrade to `path` by hand with `extra_headers` (each `Name: value\r\n`)
    /// added to the usual upgrade headers; asserts `101`.
    pub async fn connect_with_headers(addr: SocketAddr, path: &str, extra_headers: &str) -> RawWs {
        within("raw websocket handshake", async {
            let mut stream = TcpStream::connect(addr)
                .await
                .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
            );
            stream
                .write_all(req.as_bytes())
                .await
                .unwrap_or_else(|e| panic!("write upgrade request: {e}"));
            let mut buf = Vec::new();
            let end = loop {
                if let Some(pos) = find(&buf, b"\r\n\r\n") {
                    break pos;
                }
                assert!(
                    read_more(&mut stream, &mut buf).await > 0,
                    "connection closed during upgrade: {:?}",
                    String::from_utf8_lossy(&buf)
                );
            };
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            assert!(
                head.starts_with("HTTP/1.1 101"),
                "upgrade refused: {head:?}"
            );
            buf.drain(..end + 4);
            RawWs { stream, buf }
        })
        .await
    }

    /// Write `bytes` (frames built with [`ws_frame`], or anything else) while reading the
    /// server's frames, until `stop` returns true for one of them, the connection ends, or
    /// `limit` passes (then `timed_out` is set). Returns every frame read except Engine.IO pings (`2`) and
    /// websocket pings, the write error if writing failed (a server that closes early makes the
    /// rest of a big write fail), and whether the stream reached EOF.
    pub async fn write_while_reading(
        &mut self,
        bytes: &[u8],
        limit: Duration,
        mut stop: impl FnMut(u8, &[u8]) -> bool,
    ) -> RawExchange {
        let buf = &mut self.buf;
        let (mut reader, mut writer) = self.stream.split();
        let write = async {
            for chunk in bytes.chunks(64 * 1024) {
                if let Err(e) = writer.write_all(chunk).await {
                    return Some(e.to_string());
                }
            }
            None
        };
        // Frames land here as they are read, so a time-out keeps what arrived.
        let frames = std::sync::Mutex::new(Vec::new());
        let read = async {
            loop {
                while let Some(((op, data), used)) = parse_frame(buf) {
                    buf.drain(..used);
                    if op == OP_PING || (op == OP_TEXT && data == b"2") {
                        continue;
                    }
                    let done = stop(op, &data);
                    frames
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((op, data));
                    if done {
                        return false;
                    }
                }
                buf.reserve(16 * 1024);
                match reader.read_buf(buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => {}
                }
            }
        };
        let outcome = tokio::time::timeout(limit, async { tokio::join!(read, write) }).await;
        let frames = frames.into_inner().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok((eof, write_error)) => RawExchange {
                frames,
                write_error,
                eof,
                timed_out: false,
            },
            Err(_) => RawExchange {
                frames,
                write_error: None,
                eof: false,
                timed_out: true,
            },
        }
    }

    /// Write `bytes` while reading until the server's Close frame or the end of the stream:
    /// the Close frame's code and reason (None without one) and every other frame read.
    pub async fn write_and_expect_close(
        &mut self,
        bytes: &[u8],
        limit: Duration,
    ) -> (Option<(u16, String)>, RawExchange) {
        let exchange = self
            .write_while_reading(bytes, limit, |op, _| op == OP_CLOSE)
            .await;
        let close = exchange
            .frames
            .iter()
            .find(|(op, _)| *op == OP_CLOSE)
            .map(|(_, data)| {
                if data.len() < 2 {
                    (1005, String::new())
                } else {
                    (
                        u16::from_be_bytes([data[0], data[1]]),
                        String::from_utf8_lossy(&data[2..]).into_owned(),
                    )
                }
            });
        (close, exchange)
    }

    /// Send the Engine.IO pong `3` (mask of zeros), reporting rather than panicking on failure.
    async fn try_pong(&mut self) -> std::io::Result<()> {
        self.stream
            .write_all(&[0x80 | OP_TEXT, 0x80 | 1, 0, 0, 0, 0, b'3'])
            .await
    }
}

/// What [`RawWs::write_while_reading`] saw.
#[derive(Debug)]
pub struct RawExchange {
    /// Every frame read (opcode, payload), pings left out.
    pub frames: Vec<(u8, Vec<u8>)>,
    /// The write error, if the write failed.
    pub write_error: Option<String>,
    /// The stream ended (EOF or a read error).
    pub eof: bool,
    /// The time limit passed before `stop` said so or the stream ended.
    pub timed_out: bool,
}

/// One websocket frame written by hand: `fin`, the three reserved bits (`rsv`, 0..=7), the
/// opcode, an optional mask (None = unmasked, which a server must refuse from a client) and the
/// payload. The length is encoded in the shortest form.
pub fn ws_frame(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(if fin { 0x80 } else { 0 } | (rsv & 0x7) << 4 | (opcode & 0x0f));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        // Casts: each arm bounds the length to the field it is written into.
        n if n < 126 => frame.push(mask_bit | n as u8),
        n if n <= usize::from(u16::MAX) => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(mask) => {
            frame.extend_from_slice(&mask);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        None => frame.extend_from_slice(payload),
    }
    frame
}

/// Parse one unfragmented server frame from `buf`: `((opcode, payload), bytes used)`.
fn parse_frame(buf: &[u8]) -> Option<((u8, Vec<u8>), usize)> {
    let (&b0, &b1) = (buf.first()?, buf.get(1)?);
    let masked = b1 & 0x80 != 0;
    let (len, mut pos) = match b1 & 0x7f {
        126 => (
            usize::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
            4,
        ),
        127 => {
            let bytes: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            (usize::try_from(u64::from_be_bytes(bytes)).ok()?, 10)
        }
        n => (usize::from(n), 2),
    };
    let mask = if masked {
        let m: [u8; 4] = buf.get(pos..pos + 4)?.try_into().ok()?;
        pos += 4;
        Some(m)
    } else {
        None
    };
    let data = buf.get(pos..pos + len)?;
    let payload = match mask {
        Some(m) => data.iter().enumerate().map(|(i, b)| b ^ m[i % 4]).collect(),
        None => data.to_vec(),
    };
    Some(((b0 & 0x0f, payload), pos + len))
}

// ---------------------------------------------------------------------------------------------
// Metrics

/// `GET /metrics`; panics unless it answers 200 (the text exposition).
pub async fn scrape_metrics(addr: SocketAddr) -> String {
    let res = http_get(addr, "/metrics").await;
    assert_eq!(
        res.status,
        200,
        "GET /metrics (the node must export metrics): {}",
        truncate(&res.text())
    );
    res.text()
}

/// The value of metric `name` in a Prometheus text exposition, summed over every series of it
/// (whatever the labels); None when no series has that name.
pub fn metric_value(exposition: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in exposition.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = if rest.starts_with('{') {
            rest.rsplit_once('}').map(|(_, v)| v)
        } else if rest.starts_with(' ') {
            Some(rest)
        } else {
            // A longer name that starts with `name` (e.g. `name_bucket`).
            None
        };
        let Some(value) = value.and_then(|v| v.split_whitespace().next()) else {
            continue;
        };
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad sample value in metrics line {line:?}"));
        *total.get_or_insert(0.0) += value;
    }
    total
}

/// `GET /metrics` and the value of `name` (summed over its series); panics when it is missing.
pub async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let text = scrape_metrics(addr).await;
    metric_value(&text, name)
        .unwrap_or_else(|| panic!("GET /metrics has no series {name}:\n{}", truncate(&text)))
}

// ---------------------------------------------------------------------------------------------
// Product-mode Socket.IO client

/// A packet the server sent to a [`SioClient`] (namespace `/`).
#[derive(Debug, Clone, PartialEq)]
pub enum SioPacket {
    /// `42[name, args…]`.
    Event {
        /// The event name.
        name: String,
        /// Its arguments.
        args: Vec<Value>,
    },
    /// `43<id>[args…]`.
    Ack {
        /// The ack id the client chose.
        id: u64,
        /// The ack's arguments.
        args: Vec<Value>,
    },
    /// `41`: the server disconnected the socket.
    Disconnect,
    /// Any other text or binary frame (described).
    Other(String),
    /// The connection ended: the server's Close frame, or the end of the stream.
    Closed(WsEvent),
}

/// Parse one Socket.IO text packet (`4…`); anything else is [`SioPacket::Other`].
pub fn parse_sio(text: &str) -> SioPacket {
    let other = || SioPacket::Other(text.to_owned());
    let Some(rest) = text.strip_prefix('4') else {
        return other();
    };
    let mut chars = rest.chars();
    let Some(kind) = chars.next() else {
        return other();
    };
    let mut rest = chars.as_str();
    if rest.starts_with('/') {
        match rest.split_once(',') {
            Some((_, after)) => rest = after,
            None => rest = "",
        }
    }
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let id: Option<u64> = rest[..digits].parse().ok();
    let json = &rest[digits..];
    let array = || match serde_json::from_str::<Value>(json) {
        Ok(Value::Array(items)) => Some(items),
        _ => None,
    };
    match kind {
        '1' => SioPacket::Disconnect,
        '2' => match array() {
            Some(mut items) if items.first().is_some_and(Value::is_string) => {
                let name = items.remove(0).as_str().unwrap_or_default().to_owned();
                SioPacket::Event { name, args: items }
            }
            _ => other(),
        },
        '3' => match (id, array()) {
            (Some(id), Some(args)) => SioPacket::Ack { id, args },
            _ => other(),
        },
        _ => other(),
    }
}

enum SioCommand {
    Text(String),
    /// Send a websocket Close frame and keep reading until the server's.
    Close,
}

/// A product-mode Socket.IO client on `/` over websocket: authenticates at CONNECT, answers
/// Engine.IO pings in the background (until [`SioClient::stop_answering_pings`]), sends events
/// with or without acks, and keeps every packet it has not consumed yet, so waits for one event
/// never lose another.
pub struct SioClient {
    /// The payload of the `authenticated` event (`socketId`, `userId`, `deviceId`,
    /// `serverInstance`).
    pub hello: Value,
    outgoing: mpsc::UnboundedSender<SioCommand>,
    incoming: mpsc::UnboundedReceiver<SioPacket>,
    buffered: std::collections::VecDeque<SioPacket>,
    answer_pings: Arc<std::sync::atomic::AtomicBool>,
    next_ack: u64,
    task: Option<JoinHandle<()>>,
}

impl SioClient {
    /// Open a websocket, send `40<auth>` and expect `40{"sid":…}` then `authenticated`.
    pub async fn connect(addr: SocketAddr, auth: Value) -> SioClient {
        match Self::try_connect(addr, auth.clone()).await {
            Ok(client) => client,
            Err(refusal) => panic!("CONNECT with {auth} refused: {refusal}"),
        }
    }

    /// Like [`SioClient::connect`], but a refused CONNECT (`44…`) is returned as its text.
    pub async fn try_connect(addr: SocketAddr, auth: Value) -> Result<SioClient, String> {
        let (mut ws, _) = ws_connect(addr).await;
        ws.send_text(&format!("40{auth}")).await;
        let reply = ws.recv_text_answering_pings().await;
        if reply.starts_with("44") {
            return Err(reply);
        }
        connect_reply_sid(&reply, "");
        let hello = ws.recv_text_answering_pings().await;
        let hello = match parse_sio(&hello) {
            SioPacket::Event { name, mut args } if name == "authenticated" && args.len() == 1 => {
                args.remove(0)
            }
            _ => panic!("expected the `authenticated` event after CONNECT, got {hello:?}"),
        };
        let (outgoing, mut out_rx) = mpsc::unbounded_channel::<SioCommand>();
        let (in_tx, incoming) = mpsc::unbounded_channel();
        let answer_pings = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let answer = answer_pings.clone();
        let mut stream = ws.stream;
        let task = tokio::spawn(async move {
            let mut closing = false;
            loop {
                tokio::select! {
                    event = next_event(&mut stream) => match event {
                        WsEvent::Text(t) if t == "2" => {
                            if answer.load(std::sync::atomic::Ordering::Relaxed)
                                && let Err(e) = stream.send(Message::text("3")).await
                            {
                                let _ = in_tx.send(SioPacket::Closed(WsEvent::Ended(format!(
                                    "pong failed: {e}"
                                ))));
                                return;
                            }
                        }
                        WsEvent::Text(t) => {
                            let _ = in_tx.send(parse_sio(&t));
                        }
                        WsEvent::Binary(b) => {
                            let _ = in_tx.send(SioPacket::Other(format!("binary frame {b:?}")));
                        }
                        end @ (WsEvent::Close(_) | WsEvent::Ended(_)) => {
                            let _ = in_tx.send(SioPacket::Closed(end));
                            return;
                        }
                    },
                    command = out_rx.recv(), if !closing => match command {
                        Some(SioCommand::Text(text)) => {
                            if let Err(e) = stream.send(Message::text(text)).await {
                                let _ = in_tx.send(SioPacket::Closed(WsEvent::Ended(format!(
                                    "send failed: {e}"
                                ))));
                                return;
                            }
                        }
                        Some(SioCommand::Close) => {
                            // The server answers with its own Close, read above.
                            let _ = stream.send(Message::Close(None)).await;
                            closing = true;
                        }
                        None => return,
                    },
                }
            }
        });
        Ok(SioClient {
            hello,
            outgoing,
            incoming,
            buffered: std::collections::VecDeque::new(),
            answer_pings,
            next_ack: 1,
            task: Some(task),
        })
    }

    /// The socket id from `authenticated`.
    pub fn socket_id(&self) -> &str {
        self.hello["socketId"].as_str().unwrap_or_default()
    }

    /// Send a raw text frame (any Engine.IO/Socket.IO packet).
    pub fn send_raw(&self, text: impl Into<String>) {
        // A closed connection shows up as `Closed` on the next wait.
        let _ = self.outgoing.send(SioCommand::Text(text.into()));
    }

    /// Emit `event` with `data`, no ack.
    pub fn emit(&self, event: &str, data: Value) {
        self.send_raw(format!("42{}", Value::from(vec![Value::from(event), data])));
    }

    /// Emit `event` with `data` asking for an ack; returns the ack id (see [`SioClient::ack`]).
    pub fn emit_with_ack(&mut self, event: &str, data: Value) -> u64 {
        let id = self.next_ack;
        self.next_ack += 1;
        self.send_raw(format!(
            "42{id}{}",
            Value::from(vec![Value::from(event), data])
        ));
        id
    }

    /// The first argument of the ack with this id (waiting at most [`TIMEOUT`]).
    pub async fn ack(&mut self, id: u64) -> Value {
        self.ack_within(TIMEOUT, id).await
    }

    /// The first argument of the ack with this id, waiting at most `limit`.
    pub async fn ack_within(&mut self, limit: Duration, id: u64) -> Value {
        let packet = self
            .next_matching(
                limit,
                &format!("ack {id}"),
                |p| matches!(p, SioPacket::Ack { id: got, .. } if *got == id),
            )
            .await;
        match packet {
            SioPacket::Ack { mut args, .. } if !args.is_empty() => args.remove(0),
            other => panic!("ack {id} has no argument: {other:?}"),
        }
    }

    /// Emit `event` with an ack and return the ack's first argument.
    pub async fn call(&mut self, event: &str, data: Value) -> Value {
        let id = self.emit_with_ack(event, data);
        self.ack(id).await
    }

    /// The first argument of the next `name` event (waiting at most [`TIMEOUT`]).
    pub async fn event(&mut self, name: &str) -> Value {
        let packet = self
            .next_matching(
                TIMEOUT,
                &format!("event {name:?}"),
                |p| matches!(p, SioPacket::Event { name: got, .. } if got == name),
            )
            .await;
        match packet {
            SioPacket::Event { mut args, .. } => {
                if args.is_empty() {
                    Value::Null
                } else {
                    args.remove(0)
                }
            }
            _ => unreachable!("matched an event"),
        }
    }

    /// How many `name` events arrived and were not consumed yet (without waiting).
    pub fn pending_events(&mut self, name: &str) -> usize {
        while let Ok(packet) = self.incoming.try_recv() {
            self.buffered.push_back(packet);
        }
        self.buffered
            .iter()
            .filter(|p| matches!(p, SioPacket::Event { name: got, .. } if got == name))
            .count()
    }

    /// Every packet received and not consumed yet (without waiting); the buffer is emptied.
    pub fn take_buffered(&mut self) -> Vec<SioPacket> {
        while let Ok(packet) = self.incoming.try_recv() {
            self.buffered.push_back(packet);
        }
        self.buffered.drain(..).collect()
    }

    /// Stop answering Engine.IO pings (the server will time the session out).
    pub fn stop_answering_pings(&self) {
        self.answer_pings
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Wait (at most `limit`) until the connection ends; returns how.
    pub async fn closed_within(&mut self, limit: Duration) -> WsEvent {
        match self
            .next_matching(limit, "the connection to end", |p| {
                matches!(p, SioPacket::Closed(_))
            })
            .await
        {
            SioPacket::Closed(how) => how,
            _ => unreachable!("matched Closed"),
        }
    }

    /// A clean client disconnect: `41`, then a websocket Close; waits for the server's Close.
    pub async fn disconnect(mut self) {
        self.send_raw("41");
        let _ = self.outgoing.send(SioCommand::Close);
        self.closed_within(TIMEOUT).await;
    }

    /// Drop the TCP connection without a Close frame (a lost network).
    pub async fn drop_connection(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            // Cancelled: the websocket stream, and its socket, are gone once this returns.
            let _ = task.await;
        }
    }

    async fn next_matching(
        &mut self,
        limit: Duration,
        what: &str,
        matches: impl Fn(&SioPacket) -> bool,
    ) -> SioPacket {
        if let Some(pos) = self.buffered.iter().position(&matches) {
            return self.buffered.remove(pos).unwrap_or_else(|| unreachable!());
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let packet = match tokio::time::timeout_at(deadline, self.incoming.recv()).await {
                Ok(Some(packet)) => packet,
                Ok(None) => panic!(
                    "waiting for {what}: the client task ended; unconsumed: {:?}",
                    self.buffered
                ),
                Err(_) => panic!(
                    "timed out after {limit:?} waiting for {what}; unconsumed: {:?}",
                    self.buffered
                ),
            };
            if matches(&packet) {
                return packet;
            }
            if matches!(packet, SioPacket::Closed(_)) {
                panic!(
                    "waiting for {what}, the connection ended ({packet:?}); unconsumed: {:?}",
                    self.buffered
                );
            }
            self.buffered.push_back(packet);
        }
    }
}

impl Drop for SioClient {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
