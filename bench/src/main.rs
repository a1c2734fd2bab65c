//! `switchboard-loadgen`: a load generator for Switchboard speaking Engine.IO v4 / Socket.IO v5
//! over websockets (through `switchboard-protocol`), authenticating with minted HS256 JWTs.
//!
//! Each run executes one scenario and writes ONE JSON result to stdout (or `--out FILE`);
//! progress goes to stderr. See `--help` for the scenarios and the server flags they need.

mod client;
mod stats;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

use crate::client::{Conn, Target};
use crate::stats::{Percentiles, Recorder, Sampler, ServerUsage, message_text, payload, round2};

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
/// zero errors.
#[derive(Debug, Parser)]
#[command(name = "switchboard-loadgen", version)]
struct Args {
    /// Scenario to run.
    #[arg(long, value_enum)]
    scenario: Scenario,

    /// Server address (host:port).
    #[arg(long, default_value = "127.0.0.1:3000")]
    server: SocketAddr,

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

    /// Connections (users; room members for room-fanout).
    #[arg(long, short = 'n', default_value_t = 100)]
    connections: u64,

    /// Seconds the scenario's load lasts (hold time for idle).
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,

    /// Target rate: messages/s in total (relay, durable), emits/s (room-fanout), connections/s
    /// (churn).
    #[arg(long, short = 'r', default_value_t = 100.0)]
    rate: f64,

    /// Messages to send in the durable scenario.
    #[arg(long, default_value_t = 1000)]
    messages: u64,

    /// Connection handshakes in flight at once while connecting.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,

    /// Seconds one connection may take to become authenticated.
    #[arg(long, default_value_t = 10.0)]
    connect_timeout: f64,

    /// Seconds to wait after the load for outstanding deliveries before counting losses.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,

    /// Server process id: its RSS and CPU are sampled from /proc/<pid>.
    #[arg(long)]
    server_pid: Option<u32>,

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

fn main() {
    let args = Args::parse();
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
    let result = runtime.block_on(run(args));
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

    /// A token for user `i`, valid for the run plus a margin.
    fn token(&self, i: u64, rooms: &[String]) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let ttl = self.args.duration.max(0.0) as u64 + 3600;
        let mut claims = json!({ "sub": self.user(i), "iat": now, "exp": now + ttl });
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

    /// Connect client `i` (errors are counted).
    async fn connect_one(&self, i: u64, rooms: &[String]) -> Option<Conn> {
        let token = self.token(i, rooms);
        match client::connect(&self.target, self.source(), &token, i, self.rec.clone()).await {
            Ok(conn) => Some(conn),
            Err(e) => {
                self.rec.error(format!("connect user {i}: {e}"));
                None
            }
        }
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
        eprintln!(
            "[loadgen] connected {established}/{n} in {secs:.1}s ({:.0}/s)",
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

/// Parse args, run the scenario, write the result; returns whether the run was clean (or
/// `true` without `--check`).
async fn run(args: Args) -> Result<bool, String> {
    if args.source_addrs.is_empty() {
        return Err("--source-addrs is empty".to_owned());
    }
    if args.jwt_secret.is_empty() {
        return Err("--jwt-secret is empty".to_owned());
    }
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => eprintln!(
            "[loadgen] open files limit {limit}: about {} connections per process",
            limit.saturating_sub(100)
        ),
        Err(e) => eprintln!("[loadgen] could not raise the open files limit: {e}"),
    }
    let tag = args.run_tag.clone().unwrap_or_else(|| {
        let n: u32 = rand::rng().random();
        format!("b{n:08x}")
    });
    let members = if args.scenario == Scenario::RoomFanout {
        args.connections
    } else {
        1
    };
    let target = Target {
        server: args.server,
        sources: args.source_addrs.clone(),
        connect_timeout: Duration::from_secs_f64(args.connect_timeout.max(0.1)),
    };
    let ctx = Arc::new(Ctx {
        target,
        rec: Arc::new(Recorder::new(members)),
        tag,
        next_source: AtomicU64::new(0),
        conn_stats: std::sync::Mutex::new(ConnStats::default()),
        extra: std::sync::Mutex::new(serde_json::Map::new()),
        args,
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let sampler = ctx.args.server_pid.map(|pid| {
        let sampler = Arc::new(Sampler::new(pid));
        let rx = stop_rx.clone();
        tokio::spawn(async move { sampler.run(rx).await })
    });
    let own = {
        let sampler = Arc::new(Sampler::new(std::process::id()));
        let rx = stop_rx.clone();
        tokio::spawn(async move { sampler.run(rx).await })
    };
    let progress = spawn_progress(ctx.clone(), stop_rx.clone());

    let started = Instant::now();
    let scenario = ctx.args.scenario;
    eprintln!(
        "[loadgen] {} against {} (run tag {})",
        scenario.name(),
        ctx.args.server,
        ctx.tag
    );
    match scenario {
        Scenario::Idle => idle(&ctx).await,
        Scenario::Relay => relay(&ctx).await,
        Scenario::Durable => durable(&ctx).await,
        Scenario::RoomFanout => room_fanout(&ctx).await,
        Scenario::Churn => churn(&ctx).await,
    }
    let wall = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let server: Option<ServerUsage> = match sampler {
        Some(handle) => handle.await.ok(),
        None => None,
    };
    let loadgen = own.await.ok();
    progress.abort();

    let result = result_json(&ctx, wall, server, loadgen);
    let text = serde_json::to_string_pretty(&result).map_err(|e| e.to_string())?;
    match &ctx.args.out {
        Some(path) => std::fs::write(path, format!("{text}\n"))
            .map_err(|e| format!("write {}: {e}", path.display()))?,
        None => println!("{text}"),
    }
    Ok(!ctx.args.check || is_clean(&result))
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
            eprintln!(
                "[loadgen] {:>6.1}s conns={} sent={} delivered={} dup={} errors={}",
                started.elapsed().as_secs_f64(),
                r.alive.load(Ordering::Relaxed),
                r.sent.load(Ordering::Relaxed),
                r.delivered.load(Ordering::Relaxed),
                r.duplicated.load(Ordering::Relaxed),
                r.errors.load(Ordering::Relaxed),
            );
        }
    })
}

/// Build the JSON result.
fn result_json(
    ctx: &Ctx,
    wall: f64,
    server: Option<ServerUsage>,
    loadgen: Option<ServerUsage>,
) -> Value {
    let r = &ctx.rec;
    let a = &ctx.args;
    let conn = ctx
        .conn_stats
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let sent = r.sent.load(Ordering::Relaxed);
    let delivered = r.delivered.load(Ordering::Relaxed);
    let expected = sent * r.members;
    let latencies = r.sorted_latencies();
    let extra = ctx.extra.lock().unwrap_or_else(|e| e.into_inner()).clone();
    json!({
        "scenario": a.scenario.name(),
        "parameters": {
            "server": a.server.to_string(),
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
            "duplicated": r.duplicated.load(Ordering::Relaxed),
            "unexpected": r.unexpected.load(Ordering::Relaxed),
            "load_s": round2(conn.load_secs),
            "send_rate_per_s": round2(sent as f64 / conn.load_secs.max(1e-3)),
        },
        "latency_ms": Percentiles::from_sorted(&latencies),
        "server": server,
        // The load generator itself: near 100 % of its cores means the client, not the
        // server, may be the bottleneck.
        "loadgen": loadgen,
        "errors": {
            "count": r.errors.load(Ordering::Relaxed),
            "samples": r.error_samples(),
        },
        "scenario_details": extra,
    })
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

/// `relay`: random sender → random other user, `signal` at R/s total for D seconds.
async fn relay(ctx: &Arc<Ctx>) {
    let n = ctx.args.connections;
    let conns = ctx.connect_all(n, Vec::new()).await;
    if n < 2 {
        ctx.rec.error("relay needs at least 2 connections");
        return;
    }
    let users: Vec<String> = (0..n).map(|i| ctx.user(i)).collect();
    let mut rng = rand::rng();
    let rec = ctx.rec.clone();
    let load_started = Instant::now();
    paced(
        ctx.args.rate,
        u64::MAX,
        Duration::from_secs_f64(ctx.args.duration),
        |id| {
            let from = rng.random_range(0..n);
            let mut to = rng.random_range(0..n - 1);
            if to >= from {
                to += 1;
            }
            let (Some(sender), Some(_)) = (&conns[from as usize], &conns[to as usize]) else {
                return; // a failed connection was already counted as an error
            };
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
