//! `switchboard-loadgen`: a load generator for Switchboard speaking Engine.IO v4 / Socket.IO v5
//! over websockets (through `switchboard-protocol`), authenticating with minted HS256 JWTs.
//!
//! Each run executes one scenario and writes ONE JSON result to stdout (or `--out FILE`);
//! progress goes to stderr. See `--help` for the scenarios and the server flags they need.

/// Print one line on stderr, prefixed, in a single write: the lines of concurrent shard
/// processes sharing the terminal then do not interleave.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let line = format!("{} {}\n", $crate::pfx(), format_args!($($arg)*));
        let _ = std::io::stderr().write_all(line.as_bytes());
    }};
}

mod client;
mod hold;
mod multi;
mod soak;
mod stats;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

use crate::client::{Conn, Target};
use crate::stats::{
    Histogram, Percentiles, Recorder, Sampler, ServerUsage, message_text, payload, round2,
};

/// Scenario to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// N authenticated connections held for D seconds.
    Idle,
    /// N users send `signal {to: random peer, data: {id, t}}` at R msg/s in total for D seconds.
    Relay,
    /// `message:send` with acks (`--messages` at R msg/s), then `message:sync` checks that every
    /// acked message is stored exactly once for its recipient.
    Durable,
    /// N members of one room (token `rooms` claim); one emitter does `room:emit` at R/s for D
    /// seconds; every member must receive every emit.
    RoomFanout,
    /// Connect + authenticate + disconnect at R/s for D seconds.
    Churn,
    /// Relay where every `signal` goes from a client on one node to a user on another node
    /// (through Redis): needs at least two `--server` addresses.
    Cluster,
    /// For D seconds at once: churn at `--churn-rate`, relay among N stable clients at R msg/s,
    /// and one `room:emit` per second to a room of the stable clients.
    Soak,
    /// N connections held until `--stop-file` exists (at most D seconds), for bench/scale:
    /// counts server-API broadcasts (`room:msg` `{data: {id, t}}`, ids below `--messages`)
    /// at every held client, and reconnects a dropped client with socket.io-client's backoff
    /// and jitter (to `--reconnect-to` when given), timing each drop → authenticated again.
    Hold,
}

impl Scenario {
    /// The scenario's name in the JSON result.
    fn name(self) -> &'static str {
        match self {
            Scenario::Idle => "idle",
            Scenario::Relay => "relay",
            Scenario::Durable => "durable",
            Scenario::RoomFanout => "room-fanout",
            Scenario::Churn => "churn",
            Scenario::Cluster => "cluster",
            Scenario::Soak => "soak",
            Scenario::Hold => "hold",
        }
    }
}

/// Load generator for Switchboard (Engine.IO v4 / Socket.IO v5 over websockets).
///
/// The server under test must share the JWT secret and have its rate limits raised, or the
/// limits (100 events per socket per 10 s, 30 `message:send` per user per minute) turn the
/// load into `rate_limited` errors. Start it with e.g.
/// `switchboard --jwt-secret S --socket-event-limit 1000000 --user-message-limit 1000000`.
/// Loss is counted per message id (each message carries `{id, t}`; `t` is the send time in
/// µs, giving the latency); a run without faults must report zero lost, zero duplicated and
/// zero errors. Several `--server` addresses (cluster nodes) get the clients round-robin;
/// `--processes K` splits the run over K processes (users, rooms, rates and counts per shard)
/// and writes one merged result.
#[derive(Debug, Parser)]
#[command(name = "switchboard-loadgen", version)]
struct Args {
    /// Scenario to run.
    #[arg(long, value_enum)]
    scenario: Scenario,

    /// Server addresses (host:port), comma-separated: clients are assigned to them round-robin.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:3000")]
    server: Vec<SocketAddr>,

    /// HS256 secret the server was started with (`--jwt-secret`).
    #[arg(long, env = "SWITCHBOARD_JWT_SECRET", hide_env_values = true)]
    jwt_secret: String,

    /// Comma-separated local addresses client sockets bind to, round-robin (each loopback
    /// source address has its own ~28k ephemeral ports).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5"
    )]
    source_addrs: Vec<IpAddr>,

    /// Connections (users; room members for room-fanout; stable clients for soak).
    #[arg(long, short = 'n', default_value_t = 100)]
    connections: u64,

    /// Seconds the scenario's load lasts (hold time for idle).
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,

    /// Target rate: messages/s in total (relay, cluster, soak, durable), emits/s (room-fanout),
    /// connections/s (churn).
    #[arg(long, short = 'r', default_value_t = 100.0)]
    rate: f64,

    /// Messages to send in the durable scenario; broadcasts every client expects in hold.
    #[arg(long, default_value_t = 1000)]
    messages: u64,

    /// hold: end the hold once this file exists.
    #[arg(long)]
    stop_file: Option<PathBuf>,

    /// hold: where a dropped client reconnects (comma-separated, e.g. load balancers; client
    /// `i`'s attempt `k` goes to address `(i + k) % len`) [default: its own server].
    #[arg(long, value_delimiter = ',')]
    reconnect_to: Vec<SocketAddr>,

    /// Connection handshakes in flight at once while connecting.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,

    /// Seconds one connection may take to become authenticated.
    #[arg(long, default_value_t = 10.0)]
    connect_timeout: f64,

    /// Seconds to wait after the load for outstanding deliveries before counting losses.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,

    /// Server process ids, comma-separated: their RSS and CPU are sampled from /proc/<pid>.
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,

    /// Load-generator processes: the parent runs K children of its own executable, each with
    /// connections/K clients at rate/K in its own user namespace, and merges their results
    /// (one process holds at most ~20,000 sockets).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    processes: u32,

    /// Connect + authenticate + disconnect cycles per second during soak.
    #[arg(long, default_value_t = 20.0)]
    churn_rate: f64,

    /// `i/K`: run as shard i of K (set by the parent of a `--processes` run).
    #[arg(long, hide = true, value_parser = parse_shard)]
    shard: Option<(u32, u32)>,

    /// Tokio worker threads [default: one per core].
    #[arg(long)]
    threads: Option<usize>,

    /// Seconds between progress lines on stderr (0 = none).
    #[arg(long, default_value_t = 5.0)]
    progress: f64,

    /// Write the JSON result here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,

    /// Exit with status 3 (after writing the result) when anything was lost, duplicated or
    /// misrouted, any error was counted, or a connection failed or dropped: for CI smoke runs.
    #[arg(long)]
    check: bool,

    /// Prefix of user ids and room names [default: a random run tag], so runs against the same
    /// server (and database) do not see each other's data.
    #[arg(long)]
    run_tag: Option<String>,
}

/// Parse `i/K` with i < K.
fn parse_shard(s: &str) -> Result<(u32, u32), String> {
    let (i, k) = s.split_once('/').ok_or("expected i/K")?;
    let i: u32 = i.parse().map_err(|e| format!("{e}"))?;
    let k: u32 = k.parse().map_err(|e| format!("{e}"))?;
    if i >= k {
        return Err("i must be below K".to_owned());
    }
    Ok((i, k))
}

/// Prefix of every stderr line: `[loadgen]`, or `[loadgen i/K]` in a shard.
static PREFIX: OnceLock<String> = OnceLock::new();

/// The stderr line prefix.
fn pfx() -> &'static str {
    PREFIX.get().map_or("[loadgen]", String::as_str)
}

fn main() {
    let args = Args::parse();
    let _ = PREFIX.set(match args.shard {
        Some((i, k)) => format!("[loadgen {i}/{k}]"),
        None => "[loadgen]".to_owned(),
    });
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(threads) = args.threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard-loadgen: tokio runtime: {e}");
            std::process::exit(2);
        }
    };
    let result = if args.processes > 1 && args.shard.is_none() {
        runtime.block_on(multi::run(args))
    } else {
        runtime.block_on(run(args))
    };
    match result {
        Ok(true) => {}
        Ok(false) => {
            eprintln!(
                "switchboard-loadgen: --check failed (loss, duplicates, errors or dropped connections)"
            );
            runtime.shutdown_background();
            std::process::exit(3);
        }
        Err(e) => {
            eprintln!("switchboard-loadgen: {e}");
            std::process::exit(1);
        }
    }
    // Client tasks may still be closing; do not wait for them.
    runtime.shutdown_background();
}

/// Everything one scenario needs.
struct Ctx {
    /// Command line.
    args: Args,
    /// Where clients connect.
    target: Target,
    /// Shared counters.
    rec: Arc<Recorder>,
    /// Prefix of user ids and room names.
    tag: String,
    /// Source address rotation.
    next_source: AtomicU64,
    /// Connection figures filled by the scenario.
    conn_stats: std::sync::Mutex<ConnStats>,
    /// Extra scenario-specific figures for the result.
    extra: std::sync::Mutex<serde_json::Map<String, Value>>,
    /// Histograms behind the percentiles in `extra`, by the same key (for merging shards).
    histograms: std::sync::Mutex<serde_json::Map<String, Value>>,
    /// Activity counters shown in progress lines (soak).
    activity: Activity,
}

/// Counters of the soak activities, for progress lines.
#[derive(Debug, Default)]
struct Activity {
    /// Churn cycles started.
    churn_started: AtomicU64,
    /// Churn cycles that authenticated and closed.
    churn_done: AtomicU64,
}

/// Connection figures of a run.
#[derive(Debug, Default, Clone)]
struct ConnStats {
    /// Connections attempted.
    attempted: u64,
    /// Connections that authenticated.
    established: u64,
    /// Seconds the connect phase took.
    connect_secs: f64,
    /// Connections open when the load phase ended.
    held: i64,
    /// Seconds the load phase (sending) took.
    load_secs: f64,
}

impl Ctx {
    /// User id of client `i`.
    fn user(&self, i: u64) -> String {
        format!("{}-u{i}", self.tag)
    }

    /// The room of the fan-out scenario.
    fn room(&self) -> String {
        format!("{}-room", self.tag)
    }

    /// A token for `user`, valid for the run plus a margin.
    fn token(&self, user: &str, rooms: &[String]) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let ttl = self.args.duration.max(0.0) as u64 + 3600;
        let mut claims = json!({ "sub": user, "iat": now, "exp": now + ttl });
        if !rooms.is_empty() {
            claims["rooms"] = json!(rooms);
        }
        let key = match jsonwebtoken::EncodingKey::from_secret(self.args.jwt_secret.as_bytes()) {
            Ok(key) => key,
            Err(_) => return String::new(),
        };
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &key,
        )
        .unwrap_or_default()
    }

    /// The next source address.
    fn source(&self) -> IpAddr {
        let i = self.next_source.fetch_add(1, Ordering::Relaxed) as usize;
        self.target.sources[i % self.target.sources.len()]
    }

    /// The server of client `i` (round-robin over `--server`).
    fn node_of(&self, i: u64) -> u64 {
        i % self.target.servers.len() as u64
    }

    /// Connect client `i` as user `i` (errors are counted).
    async fn connect_one(&self, i: u64, rooms: &[String]) -> Option<Conn> {
        self.connect_as(&self.user(i), i, rooms).await
    }

    /// Connect client `i` as `user` to the server of `i` (errors are counted).
    async fn connect_as(&self, user: &str, i: u64, rooms: &[String]) -> Option<Conn> {
        let server = self.target.servers[self.node_of(i) as usize];
        match self.try_connect(user, i, server, rooms).await {
            Ok(conn) => Some(conn),
            Err(e) => {
                self.rec.error(format!("connect {user}: {e}"));
                None
            }
        }
    }

    /// Connect client `i` as `user` to `server` (errors are the caller's to count).
    async fn try_connect(
        &self,
        user: &str,
        i: u64,
        server: SocketAddr,
        rooms: &[String],
    ) -> Result<Conn, String> {
        let token = self.token(user, rooms);
        let rec = self.rec.clone();
        client::connect(&self.target, server, self.source(), &token, i, rec).await
    }

    /// Connect clients `0..n` with bounded concurrency; failed ones are `None`.
    async fn connect_all(self: &Arc<Self>, n: u64, rooms: Vec<String>) -> Vec<Option<Conn>> {
        let started = Instant::now();
        let gate = Arc::new(Semaphore::new(self.args.connect_concurrency.max(1)));
        let rooms = Arc::new(rooms);
        let mut handles = Vec::with_capacity(n as usize);
        for i in 0..n {
            let permit = gate.clone().acquire_owned().await;
            let ctx = self.clone();
            let rooms = rooms.clone();
            handles.push(tokio::spawn(async move {
                let conn = ctx.connect_one(i, &rooms).await;
                drop(permit);
                conn
            }));
        }
        let mut conns = Vec::with_capacity(n as usize);
        for handle in handles {
            conns.push(handle.await.ok().flatten());
        }
        let secs = started.elapsed().as_secs_f64();
        let established = conns.iter().filter(|c| c.is_some()).count() as u64;
        let mut stats = self.conn_stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.attempted += n;
        stats.established += established;
        stats.connect_secs += secs;
        say!(
            "connected {established}/{n} in {secs:.1}s ({:.0}/s)",
            established as f64 / secs.max(1e-3)
        );
        conns
    }

    /// Record a scenario-specific figure.
    fn extra(&self, key: &str, value: Value) {
        self.extra
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_owned(), value);
    }

    /// Record percentiles of sorted µs samples under `key` (with their histogram for shards).
    fn percentiles(&self, key: &str, sorted: &[u64]) {
        self.extra(key, json!(Percentiles::from_sorted(sorted)));
        self.histograms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_owned(), json!(Histogram::from_sorted(sorted)));
    }

    /// Note how many connections are open now (end of the load phase).
    fn note_held(&self) {
        let held = self.rec.alive.load(Ordering::Relaxed);
        self.conn_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .held = held;
    }

    /// Note how long the load phase took.
    fn note_load(&self, since: Instant) {
        self.conn_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .load_secs = since.elapsed().as_secs_f64();
    }

    /// Wait until `expected` deliveries arrived or the drain time passed.
    async fn drain(&self, expected: u64) {
        let deadline = Instant::now() + Duration::from_secs_f64(self.args.drain.max(0.0));
        while self.rec.delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Call `send(k)` for k = 0.. at `rate` per second until `total` calls or `duration` passed.
async fn paced(rate: f64, total: u64, duration: Duration, mut send: impl FnMut(u64)) -> u64 {
    let started = Instant::now();
    let mut done = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while done < total {
        let elapsed = started.elapsed();
        if elapsed >= duration {
            break;
        }
        let due = ((elapsed.as_secs_f64() * rate).floor() as u64 + 1).min(total);
        while done < due {
            send(done);
            done += 1;
        }
        tick.tick().await;
    }
    done
}

/// Raise the open-files limit as far as allowed and say how far.
fn raise_nofile() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => say!(
            "open files limit {limit}: about {} connections per process",
            limit.saturating_sub(100)
        ),
        Err(e) => say!("could not raise the open files limit: {e}"),
    }
}

/// A random run tag.
fn random_tag() -> String {
    let n: u32 = rand::rng().random();
    format!("b{n:08x}")
}

/// Start one sampler per pid; each handle yields the figures once `stop` is set.
fn spawn_samplers(
    pids: &[u32],
    stop: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<ServerUsage>> {
    pids.iter()
        .map(|&pid| {
            let sampler = Arc::new(Sampler::new(pid));
            let rx = stop.clone();
            tokio::spawn(async move { sampler.run(rx).await })
        })
        .collect()
}

/// Await the samplers: `server` (the one node's figures, or the totals of all nodes) and
/// `servers` (per node, in `--server-pid` order); both null without `--server-pid`.
async fn server_usage(handles: Vec<tokio::task::JoinHandle<ServerUsage>>) -> (Value, Value) {
    let mut all = Vec::new();
    for handle in handles {
        if let Ok(usage) = handle.await {
            all.push(usage);
        }
    }
    match all.len() {
        0 => (Value::Null, Value::Null),
        1 => (json!(all[0]), json!(all)),
        _ => (json!(ServerUsage::total(&all)), json!(all)),
    }
}

/// Write the result to `--out` or stdout.
fn write_result(args: &Args, result: &Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(result).map_err(|e| e.to_string())?;
    match &args.out {
        Some(path) => std::fs::write(path, format!("{text}\n"))
            .map_err(|e| format!("write {}: {e}", path.display())),
        None => {
            println!("{text}");
            Ok(())
        }
    }
}

/// Parse args, run the scenario, write the result; returns whether the run was clean (or
/// `true` without `--check`).
async fn run(args: Args) -> Result<bool, String> {
    if args.source_addrs.is_empty() {
        return Err("--source-addrs is empty".to_owned());
    }
    if args.server.is_empty() {
        return Err("--server is empty".to_owned());
    }
    if args.jwt_secret.is_empty() {
        return Err("--jwt-secret is empty".to_owned());
    }
    raise_nofile();
    let base_tag = args.run_tag.clone().unwrap_or_else(random_tag);
    // Each shard has its own users and room, so routed messages stay inside the shard.
    let tag = match args.shard {
        Some((i, _)) => format!("{base_tag}-s{i}"),
        None => base_tag,
    };
    let rec = match args.scenario {
        Scenario::RoomFanout => Recorder::new(args.connections),
        Scenario::Soak => Recorder::with_room(args.connections),
        Scenario::Hold => Recorder::new(args.connections).expecting_drops(),
        _ => Recorder::new(1),
    };
    let target = Target {
        servers: args.server.clone(),
        sources: args.source_addrs.clone(),
        connect_timeout: Duration::from_secs_f64(args.connect_timeout.max(0.1)),
    };
    let ctx = Arc::new(Ctx {
        target,
        rec: Arc::new(rec),
        tag,
        next_source: AtomicU64::new(0),
        conn_stats: std::sync::Mutex::new(ConnStats::default()),
        extra: std::sync::Mutex::new(serde_json::Map::new()),
        histograms: std::sync::Mutex::new(serde_json::Map::new()),
        activity: Activity::default(),
        args,
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let samplers = spawn_samplers(&ctx.args.server_pid, &stop_rx);
    let own = spawn_samplers(&[std::process::id()], &stop_rx);
    let progress = spawn_progress(ctx.clone(), stop_rx.clone());

    let started = Instant::now();
    let scenario = ctx.args.scenario;
    say!(
        "{} against {} (run tag {})",
        scenario.name(),
        servers_text(&ctx.args.server),
        ctx.tag
    );
    match scenario {
        Scenario::Idle => idle(&ctx).await,
        Scenario::Relay => relay(&ctx, false).await,
        Scenario::Cluster => relay(&ctx, true).await,
        Scenario::Durable => durable(&ctx).await,
        Scenario::RoomFanout => room_fanout(&ctx).await,
        Scenario::Churn => churn(&ctx).await,
        Scenario::Soak => soak::run(&ctx).await,
        Scenario::Hold => hold::run(&ctx).await,
    }
    let wall = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let (server, servers) = server_usage(samplers).await;
    let (loadgen, _) = server_usage(own).await;
    progress.abort();

    let result = result_json(&ctx, wall, server, servers, loadgen);
    write_result(&ctx.args, &result)?;
    Ok(!ctx.args.check || is_clean(&result))
}

/// `a,b,c` of the server addresses.
fn servers_text(servers: &[SocketAddr]) -> String {
    servers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// No loss, duplicate, misrouted message, error, failed or dropped connection.
fn is_clean(result: &Value) -> bool {
    let zero = |v: &Value| v.as_u64() == Some(0);
    let m = &result["messages"];
    let c = &result["connections"];
    let held_ok = result["scenario"] == "churn" || c["held"].as_u64() == c["attempted"].as_u64();
    zero(&m["lost"])
        && zero(&m["duplicated"])
        && zero(&m["unexpected"])
        && zero(&result["errors"]["count"])
        && c["established"] == c["attempted"]
        && held_ok
}

/// Print a progress line every `--progress` seconds until stopped.
fn spawn_progress(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if ctx.args.progress <= 0.0 {
            return;
        }
        let started = Instant::now();
        let every = Duration::from_secs_f64(ctx.args.progress);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            let r = &ctx.rec;
            let mut line = format!(
                "{:>6.1}s conns={} sent={} delivered={} dup={} errors={}",
                started.elapsed().as_secs_f64(),
                r.alive.load(Ordering::Relaxed),
                r.sent.load(Ordering::Relaxed),
                r.delivered.load(Ordering::Relaxed),
                r.duplicated.load(Ordering::Relaxed),
                r.errors.load(Ordering::Relaxed),
            );
            if let Some(room) = &r.room {
                let a = &ctx.activity;
                line.push_str(&format!(
                    " room_emits={} room_delivered={} churn={}/{}",
                    room.sent.load(Ordering::Relaxed),
                    room.delivered.load(Ordering::Relaxed),
                    a.churn_done.load(Ordering::Relaxed),
                    a.churn_started.load(Ordering::Relaxed),
                ));
            }
            say!("{line}");
        }
    })
}

/// Build the JSON result.
fn result_json(ctx: &Ctx, wall: f64, server: Value, servers: Value, loadgen: Value) -> Value {
    let r = &ctx.rec;
    let a = &ctx.args;
    let conn = ctx
        .conn_stats
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    // Soak counts its room emits with the relayed messages (details break them down).
    let trackers: Vec<&Recorder> = std::iter::once(&**r).chain(r.room.as_deref()).collect();
    let sum = |f: fn(&Recorder) -> u64| -> u64 { trackers.iter().map(|t| f(t)).sum() };
    let sent = sum(|t| t.sent.load(Ordering::Relaxed));
    let delivered = sum(|t| t.delivered.load(Ordering::Relaxed));
    let expected = sum(|t| t.sent.load(Ordering::Relaxed) * t.members);
    let duplicated = sum(|t| t.duplicated.load(Ordering::Relaxed));
    let unexpected = sum(|t| t.unexpected.load(Ordering::Relaxed));
    let latencies = r.sorted_latencies();
    let extra = ctx.extra.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut result = json!({
        "scenario": a.scenario.name(),
        "parameters": {
            "server": servers_text(&a.server),
            "servers": a.server.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "processes": a.processes,
            "shard": a.shard.map(|(i, k)| format!("{i}/{k}")),
            "churn_rate": a.churn_rate,
            "connections": a.connections,
            "duration_s": a.duration,
            "rate": a.rate,
            "messages": a.messages,
            "source_addrs": a.source_addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "connect_concurrency": a.connect_concurrency,
            "threads": a.threads,
            "drain_s": a.drain,
            "run_tag": ctx.tag,
        },
        "wall_s": round2(wall),
        "connections": {
            "attempted": conn.attempted,
            "established": conn.established,
            "held": conn.held,
            "peak": r.peak_alive.load(Ordering::Relaxed),
            "connect_s": round2(conn.connect_secs),
            "connect_rate_per_s": round2(conn.established as f64 / conn.connect_secs.max(1e-3)),
        },
        "messages": {
            "sent": sent,
            "expected_deliveries": expected,
            "delivered": delivered,
            "lost": expected.saturating_sub(delivered),
            "duplicated": duplicated,
            "unexpected": unexpected,
            "load_s": round2(conn.load_secs),
            "send_rate_per_s": round2(sent as f64 / conn.load_secs.max(1e-3)),
        },
        "latency_ms": Percentiles::from_sorted(&latencies),
        "server": server,
        "servers": servers,
        // The load generator itself: near 100 % of its cores means the client, not the
        // server, may be the bottleneck.
        "loadgen": loadgen,
        "errors": {
            "count": r.errors.load(Ordering::Relaxed),
            "samples": r.error_samples(),
        },
        "scenario_details": extra,
    });
    if a.shard.is_some() {
        let mut histograms = ctx
            .histograms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        histograms.insert(
            "latency_ms".to_owned(),
            json!(Histogram::from_sorted(&latencies)),
        );
        result["histograms"] = Value::Object(histograms);
    }
    result
}

/// `idle`: connect N, hold them D seconds.
async fn idle(ctx: &Arc<Ctx>) {
    let conns = ctx.connect_all(ctx.args.connections, Vec::new()).await;
    let load_started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(ctx.args.duration.max(0.0))).await;
    ctx.note_load(load_started);
    ctx.note_held();
    drop(conns);
}

/// A random recipient for `from` among clients `0..n`: any other client, or with `cross_node`
/// one on another server (clients are spread round-robin over `servers` nodes).
fn pick_peer(rng: &mut impl Rng, from: u64, n: u64, servers: u64, cross_node: bool) -> u64 {
    if !cross_node {
        let to = rng.random_range(0..n - 1);
        return if to >= from { to + 1 } else { to };
    }
    let node = (from % servers + rng.random_range(1..servers)) % servers;
    // Clients node, node + servers, node + 2·servers, … below n live on that node.
    let on_node = (n - node).div_ceil(servers);
    node + rng.random_range(0..on_node) * servers
}

/// `relay` (and `cluster` with `cross_node`): random sender → random other user, `signal` at
/// R/s total for D seconds.
async fn relay(ctx: &Arc<Ctx>, cross_node: bool) {
    let n = ctx.args.connections;
    let servers = ctx.target.servers.len() as u64;
    if cross_node && servers < 2 {
        ctx.rec.error("cluster needs at least 2 --server addresses");
        return;
    }
    if n < 2.max(servers * u64::from(cross_node)) {
        ctx.rec
            .error("relay needs at least 2 connections (cluster: one per server)");
        return;
    }
    let conns = ctx.connect_all(n, Vec::new()).await;
    let users: Vec<String> = (0..n).map(|i| ctx.user(i)).collect();
    let mut rng = rand::rng();
    let rec = ctx.rec.clone();
    let mut cross = 0u64;
    let load_started = Instant::now();
    paced(
        ctx.args.rate,
        u64::MAX,
        Duration::from_secs_f64(ctx.args.duration),
        |id| {
            let from = rng.random_range(0..n);
            let to = pick_peer(&mut rng, from, n, servers, cross_node);
            let (Some(sender), Some(_)) = (&conns[from as usize], &conns[to as usize]) else {
                return; // a failed connection was already counted as an error
            };
            if ctx.node_of(from) != ctx.node_of(to) {
                cross += 1;
            }
            rec.max_id.fetch_max(id + 1, Ordering::Relaxed);
            rec.sent.fetch_add(1, Ordering::Relaxed);
            sender.emit(
                "signal",
                json!({ "to": users[to as usize], "data": payload(id) }),
            );
        },
    )
    .await;
    ctx.note_load(load_started);
    ctx.note_held();
    ctx.drain(rec.sent.load(Ordering::Relaxed)).await;
    ctx.extra("cross_node_sent", json!(cross));
    drop(conns);
}

/// `room-fanout`: N members of one room; member 0 emits at R/s; all receive every emit.
async fn room_fanout(ctx: &Arc<Ctx>) {
    let n = ctx.args.connections;
    let room = ctx.room();
    let conns = ctx.connect_all(n, vec![room.clone()]).await;
    let Some(Some(emitter)) = conns.first() else {
        ctx.rec.error("room-fanout: the emitter did not connect");
        return;
    };
    let rec = ctx.rec.clone();
    let load_started = Instant::now();
    paced(
        ctx.args.rate,
        u64::MAX,
        Duration::from_secs_f64(ctx.args.duration),
        |id| {
            rec.max_id.fetch_max(id + 1, Ordering::Relaxed);
            rec.sent.fetch_add(1, Ordering::Relaxed);
            emitter.emit("room:emit", json!({ "room": room, "data": payload(id) }));
        },
    )
    .await;
    ctx.note_load(load_started);
    ctx.note_held();
    ctx.drain(rec.sent.load(Ordering::Relaxed) * rec.members)
        .await;
    drop(conns);
}

/// `churn`: connect + authenticate + disconnect at R/s for D seconds.
async fn churn(ctx: &Arc<Ctx>) {
    let started = Instant::now();
    let completed = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    let load_started = Instant::now();
    let attempted = paced(
        ctx.args.rate,
        u64::MAX,
        Duration::from_secs_f64(ctx.args.duration),
        |i| {
            let ctx = ctx.clone();
            let completed = completed.clone();
            handles.push(tokio::spawn(async move {
                let begun = Instant::now();
                if let Some(conn) = ctx.connect_one(i, &[]).await {
                    ctx.rec.latency(begun.elapsed().as_micros() as u64);
                    conn.close();
                    completed.fetch_add(1, Ordering::Relaxed);
                }
            }));
        },
    )
    .await;
    ctx.note_load(load_started);
    for handle in handles {
        let _ = handle.await;
    }
    let secs = started.elapsed().as_secs_f64();
    let done = completed.load(Ordering::Relaxed);
    {
        let mut stats = ctx.conn_stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.attempted = attempted;
        stats.established = done;
        stats.connect_secs = secs;
    }
    // Give the last closes a moment, then everything must be gone again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    ctx.note_held();
    ctx.extra(
        "latency_is",
        json!("connect + CONNECT + authenticated, per cycle"),
    );
    ctx.extra("cycles_completed", json!(done));
}

/// `durable`: `message:send` with acks, then `message:sync` verification per recipient.
async fn durable(ctx: &Arc<Ctx>) {
    let n = ctx.args.connections;
    let conns = Arc::new(ctx.connect_all(n, Vec::new()).await);
    if n < 2 {
        ctx.rec.error("durable needs at least 2 connections");
        return;
    }
    let users: Arc<Vec<String>> = Arc::new((0..n).map(|i| ctx.user(i)).collect());
    // (message id, recipient index, server messageId) of every acked message.
    let acked: Arc<std::sync::Mutex<Vec<(u64, u64, u64)>>> =
        Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut rng = rand::rng();
    let mut handles = Vec::new();
    let ack_timeout = Duration::from_secs(30);
    let total = ctx.args.messages;
    let budget = Duration::from_secs_f64((total as f64 / ctx.args.rate.max(0.001)) * 2.0 + 60.0);
    let load_started = Instant::now();
    paced(ctx.args.rate, total, budget, |id| {
        let from = rng.random_range(0..n);
        let mut to = rng.random_range(0..n - 1);
        if to >= from {
            to += 1;
        }
        let (Some(sender), Some(_)) = (&conns[from as usize], &conns[to as usize]) else {
            return;
        };
        ctx.rec.max_id.fetch_max(id + 1, Ordering::Relaxed);
        ctx.rec.sent.fetch_add(1, Ordering::Relaxed);
        let ack = sender.emit_with_ack(
            "message:send",
            json!({ "to": users[to as usize], "text": message_text(id) }),
        );
        let rec = ctx.rec.clone();
        let acked = acked.clone();
        handles.push(tokio::spawn(async move {
            match tokio::time::timeout(ack_timeout, ack).await {
                Ok(Ok(args)) => {
                    let reply = args.first().cloned().unwrap_or(Value::Null);
                    match (reply["ok"].as_bool(), reply["messageId"].as_u64()) {
                        (Some(true), Some(mid)) => acked
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((id, to, mid)),
                        _ => rec.error(format!("message:send {id} refused: {reply}")),
                    }
                }
                Ok(Err(_)) => rec.error(format!(
                    "message:send {id}: connection closed before the ack"
                )),
                Err(_) => rec.error(format!("message:send {id}: no ack within 30 s")),
            }
        }));
    })
    .await;
    ctx.note_load(load_started);
    for handle in handles {
        let _ = handle.await;
    }
    ctx.note_held();
    let acked = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    ctx.drain(ctx.rec.sent.load(Ordering::Relaxed)).await;

    // Verify through message:sync: every acked id exactly once in its recipient's history.
    let verify_started = Instant::now();
    let mut by_recipient: std::collections::HashMap<u64, Vec<u64>> = Default::default();
    for &(id, to, _) in &acked {
        by_recipient.entry(to).or_default().push(id);
    }
    let (mut missing, mut duplicated, mut checked) = (0u64, 0u64, 0u64);
    for (&to, ids) in &by_recipient {
        let Some(conn) = &conns[to as usize] else {
            continue;
        };
        let Some(found) = sync_all(ctx, conn, &users[to as usize]).await else {
            missing += ids.len() as u64;
            continue;
        };
        for id in ids {
            checked += 1;
            match found.get(id).copied().unwrap_or(0) {
                0 => missing += 1,
                1 => {}
                c => duplicated += u64::from(c - 1),
            }
        }
    }
    if missing > 0 {
        ctx.rec
            .error(format!("message:sync: {missing} acked messages missing"));
    }
    if duplicated > 0 {
        ctx.rec.error(format!(
            "message:sync: {duplicated} duplicate stored messages"
        ));
    }
    let unique_server_ids: std::collections::HashSet<u64> =
        acked.iter().map(|&(_, _, mid)| mid).collect();
    if unique_server_ids.len() != acked.len() {
        ctx.rec
            .error("message:send acks reused a messageId".to_owned());
    }
    ctx.extra("acked", json!(acked.len()));
    ctx.extra(
        "sync",
        json!({
            "recipients": by_recipient.len(),
            "checked": checked,
            "missing": missing,
            "duplicated": duplicated,
            "verify_s": round2(verify_started.elapsed().as_secs_f64()),
        }),
    );
    ctx.extra(
        "latency_is",
        json!("send → live message:received at the recipient"),
    );
}

/// Page through `message:sync` for `user`; count ids of bench messages addressed to them.
async fn sync_all(
    ctx: &Ctx,
    conn: &Conn,
    user: &str,
) -> Option<std::collections::HashMap<u64, u32>> {
    let mut found = std::collections::HashMap::new();
    let mut after = 0u64;
    loop {
        let ack = conn.emit_with_ack("message:sync", json!({ "after": after, "limit": 500 }));
        let reply = match tokio::time::timeout(Duration::from_secs(30), ack).await {
            Ok(Ok(args)) => args.first().cloned().unwrap_or(Value::Null),
            _ => {
                ctx.rec.error(format!("message:sync for {user}: no ack"));
                return None;
            }
        };
        if reply["ok"].as_bool() != Some(true) {
            ctx.rec
                .error(format!("message:sync for {user} refused: {reply}"));
            return None;
        }
        let messages = reply["messages"].as_array().cloned().unwrap_or_default();
        for m in &messages {
            if let Some(mid) = m["messageId"].as_u64() {
                after = after.max(mid);
            }
            if m["to"].as_str() != Some(user) {
                continue;
            }
            if let Some((id, _)) = m["text"].as_str().and_then(stats::parse_text) {
                *found.entry(id).or_insert(0u32) += 1;
            }
        }
        if reply["hasMore"].as_bool() != Some(true) || messages.is_empty() {
            return Some(found);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_node_peers_are_on_another_node() {
        let mut rng = rand::rng();
        for (n, servers) in [(2u64, 2u64), (10, 3), (7, 3), (100, 4)] {
            let mut seen = std::collections::HashSet::new();
            for _ in 0..2_000 {
                let from = rng.random_range(0..n);
                let to = pick_peer(&mut rng, from, n, servers, true);
                assert!(to < n);
                assert_ne!(from % servers, to % servers, "n={n} servers={servers}");
                seen.insert(to);
            }
            assert_eq!(seen.len() as u64, n, "every client is someone's peer");
            for _ in 0..200 {
                let from = rng.random_range(0..n);
                assert_ne!(pick_peer(&mut rng, from, n, 1, false), from);
            }
        }
    }

    #[test]
    fn shard_flag_parses() {
        assert_eq!(parse_shard("1/4"), Ok((1, 4)));
        assert!(parse_shard("4/4").is_err());
        assert!(parse_shard("x").is_err());
    }
}
