//! Fault-test parts: a throwaway [`Redis`], a PostgreSQL server of the test's own
//! ([`OwnPostgres`], so it can be stopped and restarted), network namespaces for partitions
//! ([`Netns`]) and [`DurableLoad`], the loss checker: senders that keep doing `message:send` with
//! acks through whatever happens to the nodes, reconnecting as real clients do, and a final
//! `message:sync` audit that every acknowledged message is stored exactly once.
//!
//! Nothing here panics on a refused connection or a missing ack while the load runs: under a
//! fault those are what the test measures, not failures of the harness.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::{SioPacket, WS_PATH, WsStream, parse_sio};

/// A free TCP port on 127.0.0.1 (bound and released; good enough for a child to take).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// Run `program args…` to completion; panic with its output unless it succeeds.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Send `signal` (e.g. `STOP`, `CONT`, `KILL`) to process `pid`.
pub fn signal(pid: u32, signal: &str) {
    run("kill", &[&format!("-{signal}"), &pid.to_string()]);
}

// ---------------------------------------------------------------------------------------------
// Redis

/// A throwaway `redis-server` child, killed when dropped.
pub struct Redis {
    /// Address clients use.
    pub host: String,
    /// Its port.
    pub port: u16,
    child: Option<Child>,
    /// Extra arguments (e.g. a network namespace prefix) to restart it the same way.
    launcher: Vec<String>,
}

impl Redis {
    /// A `redis-server` on 127.0.0.1 and a free port, keeping nothing on disk.
    pub async fn start() -> Redis {
        Self::start_with(Vec::new(), "127.0.0.1", free_port()).await
    }

    /// A `redis-server` bound to `host:port`, started through `launcher` (e.g.
    /// `["ip", "netns", "exec", NS]`; empty: directly).
    pub async fn start_with(launcher: Vec<String>, host: &str, port: u16) -> Redis {
        let mut redis = Redis {
            host: host.to_owned(),
            port,
            child: None,
            launcher,
        };
        redis.spawn().await;
        redis
    }

    async fn spawn(&mut self) {
        let (program, pre) = match self.launcher.split_first() {
            Some((program, rest)) => (program.clone(), rest.to_vec()),
            None => ("redis-server".to_owned(), Vec::new()),
        };
        let mut cmd = Command::new(program);
        cmd.args(pre);
        if !self.launcher.is_empty() {
            cmd.arg("redis-server");
        }
        let child = cmd
            .args(["--port", &self.port.to_string(), "--bind", &self.host])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn redis-server (is it installed?): {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(reply) = self.try_command(&[b"PING"]).await
                && reply.starts_with(b"+PONG")
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {}:{} did not answer PING",
                self.host,
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `redis://host:port`.
    pub fn url(&self) -> String {
        format!("redis://{}:{}", self.host, self.port)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(Child::id)
            .expect("redis-server is running")
    }

    /// One RESP command on a fresh connection; the first reply line (with its CRLF).
    pub async fn try_command(&self, args: &[&[u8]]) -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect((self.host.as_str(), self.port)).await?;
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            req.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            req.extend_from_slice(arg);
            req.extend_from_slice(b"\r\n");
        }
        stream.write_all(&req).await?;
        let mut reply = Vec::new();
        while !reply.ends_with(b"\r\n") {
            let mut byte = [0u8; 1];
            if stream.read(&mut byte).await? == 0 {
                break;
            }
            reply.push(byte[0]);
        }
        Ok(reply)
    }

    /// One command that must succeed (within 10 s); its first reply line, trimmed.
    pub async fn command(&self, args: &[&str]) -> String {
        let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let reply = tokio::time::timeout(Duration::from_secs(10), self.try_command(&bytes))
            .await
            .unwrap_or_else(|_| panic!("redis {args:?} timed out"))
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"));
        let text = String::from_utf8_lossy(&reply).trim().to_owned();
        assert!(!text.starts_with('-'), "redis {args:?} answered {text}");
        text
    }

    /// `PUBLISH channel payload`; returns how many subscribers received it.
    pub async fn publish(&self, channel: &str, payload: &[u8]) -> i64 {
        let reply = tokio::time::timeout(
            Duration::from_secs(10),
            self.try_command(&[b"PUBLISH", channel.as_bytes(), payload]),
        )
        .await
        .unwrap_or_else(|_| panic!("PUBLISH {channel} timed out"))
        .unwrap_or_else(|e| panic!("PUBLISH {channel}: {e}"));
        let text = String::from_utf8_lossy(&reply);
        text.trim()
            .strip_prefix(':')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("PUBLISH {channel} answered {text:?}"))
    }

    /// Every pub/sub channel with a subscriber (`PUBSUB CHANNELS`), sorted.
    pub async fn channels(&self) -> Vec<String> {
        self.cli(&["PUBSUB", "CHANNELS"]).await
    }

    /// Every key (`redis-cli --scan`), sorted.
    pub async fn keys(&self) -> Vec<String> {
        self.cli(&["--scan"]).await
    }

    /// `redis-cli -h HOST -p PORT args…`, its output lines sorted.
    pub async fn cli(&self, args: &[&str]) -> Vec<String> {
        let (program, pre) = match self.launcher.split_first() {
            Some((program, rest)) => (program.clone(), rest.to_vec()),
            None => ("redis-cli".to_owned(), Vec::new()),
        };
        let mut cmd = Command::new(program);
        cmd.args(pre);
        if !self.launcher.is_empty() {
            cmd.arg("redis-cli");
        }
        let out = tokio::time::timeout(
            Duration::from_secs(10),
            cmd.args(["-h", &self.host, "-p", &self.port.to_string()])
                .args(args)
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("redis-cli {args:?} timed out"))
        .expect("run redis-cli");
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    }

    /// Kill the server (SIGKILL) and wait until it is gone; [`Redis::restart`] brings it back
    /// empty on the same port.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Start again on the same port (with no data: it keeps nothing on disk).
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }

    /// Kill the server now.
    pub async fn stop(mut self) {
        self.kill().await;
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// A PostgreSQL server of the test's own (initdb into a scratch directory, a free port, trust
/// auth), so a test may stop and restart it without touching the machine's shared server.
/// Stopped (immediate mode) and removed when dropped.
pub struct OwnPostgres {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

/// The directory holding `initdb` and `pg_ctl` (`/usr/lib/postgresql/<newest>/bin`).
fn postgres_bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (Debian's postgresql)")
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .expect("no /usr/lib/postgresql/<version>/bin/initdb")
}

/// Whether this process runs as root (PostgreSQL refuses to; it then runs as `postgres`).
fn is_root() -> bool {
    run("id", &["-u"]).trim() == "0"
}

impl OwnPostgres {
    /// initdb and start a server (a few seconds).
    pub fn start() -> OwnPostgres {
        let bin = postgres_bin_dir();
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("switchboard-pg-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the PostgreSQL directory");
        if is_root() {
            run("chown", &["postgres:postgres", &dir.to_string_lossy()]);
        }
        let pg = OwnPostgres { port, dir, bin };
        pg.pg(
            "initdb",
            &[
                "-D",
                &pg.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        pg.start_again();
        pg
    }

    fn data(&self) -> String {
        self.dir.join("data").to_string_lossy().into_owned()
    }

    /// Run a PostgreSQL tool (as `postgres` when we are root).
    fn pg(&self, tool: &str, args: &[&str]) -> String {
        let program = self.bin.join(tool).to_string_lossy().into_owned();
        if is_root() {
            let mut all = vec!["-u", "postgres", "--", program.as_str()];
            all.extend_from_slice(args);
            run("runuser", &all)
        } else {
            run(&program, args)
        }
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Crash-stop the server (`pg_ctl stop -m immediate`: no shutdown checkpoint, like a kill).
    pub fn stop(&self) {
        self.pg(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    /// Start the (stopped) server again on the same port and wait until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.to_string_lossy()
        );
        let log = self.dir.join("server.log").to_string_lossy().into_owned();
        self.pg(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if is_root() {
            let _ = std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"))
                .args(["-D", &self.data(), "-m", "immediate", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// Network namespaces

/// A network namespace of the test's own holding a service, reached from the host over one veth
/// pair per client (`10.231.<k>.0/30` style subnets): cutting one pair partitions one client
/// from the service while the others keep it. Needs root (`ip netns`). Removed when dropped.
pub struct Netns {
    /// The namespace's name.
    pub name: String,
    /// Per link: (host-side interface, namespace-side interface, namespace-side address).
    links: Vec<(String, String, String)>,
}

impl Netns {
    /// A namespace with `links` veth pairs to the host; its loopback is up.
    pub fn new(links: usize) -> Netns {
        let tag = format!("{:05}", (std::process::id() ^ free_port() as u32) % 100_000);
        let name = format!("sbf{tag}");
        run("ip", &["netns", "add", &name]);
        let mut ns = Netns {
            name,
            links: Vec::new(),
        };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        // A subnet per namespace from the tag, so concurrent tests do not collide.
        let octet = 1 + (tag.parse::<u32>().unwrap_or(0) % 200);
        for k in 0..links {
            let host_if = format!("sbh{tag}{k}");
            let ns_if = format!("sbn{tag}{k}");
            let net = format!("10.{}.{}", 100 + k, octet);
            run(
                "ip",
                &[
                    "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
                ],
            );
            run("ip", &["link", "set", &ns_if, "netns", &ns.name]);
            run(
                "ip",
                &["addr", "add", &format!("{net}.1/24"), "dev", &host_if],
            );
            run("ip", &["link", "set", &host_if, "up"]);
            ns.exec(&["ip", "addr", "add", &format!("{net}.2/24"), "dev", &ns_if]);
            ns.exec(&["ip", "link", "set", &ns_if, "up"]);
            ns.links.push((host_if, ns_if, format!("{net}.2")));
        }
        ns
    }

    /// Run a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// The prefix that runs a program inside the namespace.
    pub fn launcher(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
        ]
    }

    /// The namespace-side address of link `k` (what a host process connects to).
    pub fn address(&self, k: usize) -> String {
        self.links[k].2.clone()
    }

    /// Partition link `k`: its namespace side goes down, so packets are silently dropped (no
    /// reset, no error: what a real partition looks like to both ends).
    pub fn cut(&self, k: usize) {
        self.exec(&["ip", "link", "set", &self.links[k].1, "down"]);
    }

    /// Heal link `k`.
    pub fn heal(&self, k: usize) {
        self.exec(&["ip", "link", "set", &self.links[k].1, "up"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth ends, and with them their host peers.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

// ---------------------------------------------------------------------------------------------
// Durable load and the loss checker

/// Where the load's clients connect: tests replace the list when nodes die or move.
pub type Targets = Arc<Mutex<Vec<SocketAddr>>>;

/// Counters of a [`DurableLoad`].
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// `message:send`s written to a socket.
    pub sent: u64,
    /// Acknowledged `{ok: true, messageId}`: these must all be stored.
    pub acked: u64,
    /// Acknowledged with an error (e.g. `unavailable` during a database outage): not stored.
    pub refused: u64,
    /// No ack (the connection ended or the ack timed out): may or may not be stored.
    pub in_doubt: u64,
    /// Connections the senders opened after their first.
    pub reconnects: u64,
    /// Connection attempts that failed (refused, reset, timed out).
    pub failed_connects: u64,
    /// Longest time any sender went without an ack, from one ack to the next: how long the
    /// fault kept clients from sending.
    pub longest_stall: Duration,
    /// A few error acks and connection failures, for the test's message.
    pub samples: Vec<String>,
    /// Acked messages absent from `message:sync` (the audit).
    pub missing: u64,
    /// Messages (acked or in doubt) stored more than once.
    pub duplicated: u64,
    /// Acked messages that `message:sync` returned.
    pub found: u64,
}

impl LoadReport {
    /// Something was acked, and every acked message was found exactly once.
    pub fn is_clean(&self) -> bool {
        self.acked > 0 && self.missing == 0 && self.duplicated == 0 && self.found == self.acked
    }

    /// Panic unless every acknowledged message was found exactly once, and something was acked.
    pub fn assert_no_loss(&self, case: &str) {
        assert!(self.acked > 0, "{case}: nothing was acknowledged: {self:?}");
        assert_eq!(
            self.missing, 0,
            "{case}: acknowledged messages missing from message:sync: {self:?}"
        );
        assert_eq!(
            self.duplicated, 0,
            "{case}: messages stored twice: {self:?}"
        );
        assert_eq!(self.found, self.acked, "{case}: audit count: {self:?}");
    }
}

/// State shared by the senders.
#[derive(Default)]
struct Shared {
    report: LoadReport,
    /// Text of every acked message → its recipient.
    acked: HashMap<String, String>,
    /// Text of every in-doubt message → its recipient (may be stored, must not be twice).
    in_doubt: HashMap<String, String>,
}

/// Senders doing `message:send` with acks in a loop against the [`Targets`], each through its
/// own reconnecting connection; [`DurableLoad::finish`] stops them and audits the database
/// through `message:sync`.
pub struct DurableLoad {
    secret: String,
    tag: String,
    recipients: usize,
    targets: Targets,
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<Shared>>,
    tasks: Vec<JoinHandle<()>>,
}

/// How long a sender waits for one ack.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between a sender's messages.
const SEND_PAUSE: Duration = Duration::from_millis(5);

/// An HS256 token for `user`, valid an hour.
pub fn hs256_token(secret: &str, user: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({ "sub": user, "iat": now, "exp": now + 3600 });
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).expect("hmac key");
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &key,
    )
    .expect("sign a token")
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl DurableLoad {
    /// Start `senders` senders, sending to `recipients` users round-robin, connecting to the
    /// targets round-robin (sender `i` starts on target `i`). The nodes must share `secret`.
    pub fn start(targets: Targets, secret: &str, senders: usize, recipients: usize) -> DurableLoad {
        let tag = format!(
            "f{:x}",
            free_port() as u64 * 7919 + u64::from(std::process::id())
        );
        let mut load = DurableLoad {
            secret: secret.to_owned(),
            tag,
            recipients: recipients.max(1),
            targets,
            stop: Arc::new(AtomicBool::new(false)),
            shared: Arc::new(Mutex::new(Shared::default())),
            tasks: Vec::new(),
        };
        for i in 0..senders {
            let sender = Sender {
                index: i,
                user: format!("{}-s{i}", load.tag),
                token: hs256_token(secret, &format!("{}-s{i}", load.tag)),
                tag: load.tag.clone(),
                recipients: load.recipients,
                targets: load.targets.clone(),
                stop: load.stop.clone(),
                shared: load.shared.clone(),
            };
            load.tasks.push(tokio::spawn(sender.run()));
        }
        load
    }

    /// The counters so far.
    pub fn report(&self) -> LoadReport {
        lock(&self.shared).report.clone()
    }

    /// Wait until `n` more messages are acked than now (bounded by `limit`); returns how long
    /// it took, or panics with the report.
    pub async fn wait_acked(&self, n: u64, limit: Duration) -> Duration {
        let started = Instant::now();
        let goal = self.report().acked + n;
        while self.report().acked < goal {
            assert!(
                started.elapsed() < limit,
                "fewer than {n} acks within {limit:?}: {:?}",
                self.report()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        started.elapsed()
    }

    /// Stop sending, then audit through `message:sync` on the first target: every acked
    /// message stored exactly once, no in-doubt message stored twice.
    pub async fn finish(mut self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(ACK_TIMEOUT + Duration::from_secs(5), task).await;
        }
        let (acked, in_doubt, mut report) = {
            let shared = lock(&self.shared);
            (
                shared.acked.clone(),
                shared.in_doubt.clone(),
                shared.report.clone(),
            )
        };
        let target = self
            .targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first()
            .copied()
            .expect("a target to audit through");
        for r in 0..self.recipients {
            let user = format!("{}-r{r}", self.tag);
            let token = hs256_token(&self.secret, &user);
            let mut conn = Conn::open(target, &token)
                .await
                .unwrap_or_else(|e| panic!("audit: connect {user} to {target}: {e}"));
            let mut counts: HashMap<String, u64> = HashMap::new();
            let mut after = 0u64;
            loop {
                let reply = conn
                    .call("message:sync", json!({ "after": after, "limit": 500 }))
                    .await
                    .unwrap_or_else(|e| panic!("audit: message:sync for {user}: {e}"));
                assert_eq!(reply["ok"], true, "audit: message:sync refused: {reply}");
                let messages = reply["messages"].as_array().cloned().unwrap_or_default();
                for m in &messages {
                    after = after.max(m["messageId"].as_u64().unwrap_or(0));
                    if m["to"] == user.as_str()
                        && let Some(text) = m["text"].as_str()
                    {
                        *counts.entry(text.to_owned()).or_default() += 1;
                    }
                }
                if reply["hasMore"] != true || messages.is_empty() {
                    break;
                }
            }
            for (text, to) in &acked {
                if *to != user {
                    continue;
                }
                match counts.get(text).copied().unwrap_or(0) {
                    0 => report.missing += 1,
                    1 => report.found += 1,
                    n => {
                        report.found += 1;
                        report.duplicated += n - 1;
                    }
                }
            }
            for (text, to) in &in_doubt {
                if *to == user && counts.get(text).copied().unwrap_or(0) > 1 {
                    report.duplicated += 1;
                }
            }
        }
        report
    }
}

impl Drop for DurableLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One sender of a [`DurableLoad`].
struct Sender {
    index: usize,
    user: String,
    token: String,
    tag: String,
    recipients: usize,
    targets: Targets,
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<Shared>>,
}

impl Sender {
    async fn run(self) {
        let mut attempt = self.index;
        let mut connected_once = false;
        let mut seq = 0u64;
        let mut last_ack = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            let target = {
                let targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
                if targets.is_empty() {
                    None
                } else {
                    Some(targets[attempt % targets.len()])
                }
            };
            attempt += 1;
            let Some(target) = target else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut conn = match Conn::open(target, &self.token).await {
                Ok(conn) => conn,
                Err(e) => {
                    self.note_failure(format!("{} connect to {target}: {e}", self.user));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            if connected_once {
                lock(&self.shared).report.reconnects += 1;
            }
            connected_once = true;
            while !self.stop.load(Ordering::Relaxed) {
                let to = format!("{}-r{}", self.tag, seq as usize % self.recipients);
                let text = format!("{}#{seq}", self.user);
                seq += 1;
                lock(&self.shared).report.sent += 1;
                let result = conn
                    .call("message:send", json!({ "to": to, "text": text }))
                    .await;
                let lost_connection = {
                    let mut shared = lock(&self.shared);
                    match result {
                        Ok(reply) if reply["ok"] == true && reply["messageId"].is_u64() => {
                            shared.report.acked += 1;
                            let stall = last_ack.elapsed();
                            shared.report.longest_stall = shared.report.longest_stall.max(stall);
                            last_ack = Instant::now();
                            shared.acked.insert(text, to);
                            false
                        }
                        Ok(reply) => {
                            shared.report.refused += 1;
                            if shared.report.samples.len() < 10 {
                                shared.report.samples.push(format!("refused: {reply}"));
                            }
                            false
                        }
                        Err(e) => {
                            shared.report.in_doubt += 1;
                            shared.in_doubt.insert(text, to);
                            if shared.report.samples.len() < 10 {
                                shared.report.samples.push(format!("{}: {e}", self.user));
                            }
                            true
                        }
                    }
                };
                if lost_connection {
                    break;
                }
                tokio::time::sleep(SEND_PAUSE).await;
            }
        }
    }

    fn note_failure(&self, what: String) {
        let mut shared = lock(&self.shared);
        shared.report.failed_connects += 1;
        if shared.report.samples.len() < 10 {
            shared.report.samples.push(what);
        }
    }
}

/// A minimal Socket.IO client that reports every failure as an `Err` (never panics).
struct Conn {
    stream: WsStream,
    next_ack: u64,
}

impl Conn {
    /// Websocket, CONNECT with the token, `authenticated`: within 5 s.
    async fn open(addr: SocketAddr, token: &str) -> Result<Conn, String> {
        let url = format!("ws://{addr}{WS_PATH}");
        let open = async {
            let (stream, _) = tokio_tungstenite::connect_async(&url)
                .await
                .map_err(|e| e.to_string())?;
            let mut conn = Conn {
                stream,
                next_ack: 1,
            };
            let first = conn.next_text().await?;
            if !first.starts_with('0') {
                return Err(format!("open packet {first:?}"));
            }
            conn.send(format!("40{}", json!({ "token": token })))
                .await?;
            let reply = conn.next_text().await?;
            if !reply.starts_with("40") {
                return Err(format!("CONNECT refused: {reply}"));
            }
            loop {
                match parse_sio(&conn.next_text().await?) {
                    SioPacket::Event { name, .. } if name == "authenticated" => return Ok(conn),
                    SioPacket::Event { .. } => continue,
                    other => return Err(format!("expected authenticated, got {other:?}")),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), open)
            .await
            .map_err(|_| "connect timed out".to_owned())?
    }

    async fn send(&mut self, text: String) -> Result<(), String> {
        self.stream
            .send(Message::text(text))
            .await
            .map_err(|e| format!("send: {e}"))
    }

    /// The next text frame that is not an Engine.IO ping (answered).
    async fn next_text(&mut self) -> Result<String, String> {
        loop {
            match self.stream.next().await {
                Some(Ok(Message::Text(t))) if t.as_str() == "2" => self.send("3".into()).await?,
                Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
                Some(Ok(Message::Close(frame))) => return Err(format!("closed: {frame:?}")),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("connection ended".into()),
            }
        }
    }

    /// Emit with an ack and return the ack's first argument (other packets are skipped).
    async fn call(&mut self, event: &str, data: Value) -> Result<Value, String> {
        let id = self.next_ack;
        self.next_ack += 1;
        self.send(format!("42{id}{}", json!([event, data]))).await?;
        let wait = async {
            loop {
                if let SioPacket::Ack { id: got, mut args } = parse_sio(&self.next_text().await?)
                    && got == id
                {
                    return Ok(if args.is_empty() {
                        Value::Null
                    } else {
                        args.remove(0)
                    });
                }
            }
        };
        tokio::time::timeout(ACK_TIMEOUT, wait)
            .await
            .map_err(|_| format!("no ack for {event} within {ACK_TIMEOUT:?}"))?
    }
}
