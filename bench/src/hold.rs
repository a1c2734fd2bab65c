//! `hold`: N connections held until a stop file appears, for bench/scale (100k connections
//! over six nodes, then a node killed under them).
//!
//! While held, every client counts server-API broadcasts: the caller POSTs `/api/v1/emit`
//! `{to: {all: true}, event: "room:msg", data: {data: {id, t}}}` with ids below `--messages`,
//! so the usual fan-out tracker gives loss per client and the latency of the last delivery.
//! A client the server drops reconnects like socket.io-client (see [`backoff_ms`]), to
//! `--reconnect-to` when given, and the time from the drop until it is authenticated again
//! is recorded (`reconnect_ms`), with the wall-clock time of the last one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;

use crate::Ctx;
use crate::client::Conn;
use crate::stats::now_micros;

/// socket.io-client's `reconnectionDelay` (ms): the first retry waits about this long.
const DELAY_MS: f64 = 1000.0;
/// socket.io-client's `reconnectionDelayMax` (ms).
const DELAY_MAX_MS: f64 = 5000.0;
/// socket.io-client's `randomizationFactor`.
const JITTER: f64 = 0.5;

/// How often the stop file is looked for.
const STOP_POLL: Duration = Duration::from_millis(200);

/// The wait before reconnect attempt `attempt` (0 = the first), as socket.io-client computes
/// it: `DELAY_MS · 2^attempt`, moved by up to ±`JITTER` of itself (down or up by the parity
/// of the first decimal of `rand`, a uniform draw in [0, 1)), then capped at `DELAY_MAX_MS`.
pub fn backoff_ms(attempt: u32, rand: f64) -> u64 {
    let base = DELAY_MS * 2f64.powi(attempt.min(30) as i32);
    let deviation = (rand * JITTER * base).floor();
    let jittered = if ((rand * 10.0).floor() as u64) & 1 == 0 {
        base - deviation
    } else {
        base + deviation
    };
    jittered.clamp(0.0, DELAY_MAX_MS) as u64
}

/// Reconnect figures shared by the client tasks.
#[derive(Debug, Default)]
struct Reconnects {
    /// Clients authenticated again after a drop.
    done: AtomicU64,
    /// Reconnect attempts that failed (refused, timed out, dead node behind the balancer).
    failed_attempts: AtomicU64,
    /// Wall-clock µs of the last re-authentication.
    last_at_us: AtomicU64,
    /// Drop → authenticated again, µs.
    samples: std::sync::Mutex<Vec<u64>>,
}

/// Run the hold scenario.
pub async fn run(ctx: &Arc<Ctx>) {
    let n = ctx.args.connections;
    let rec = ctx.rec.clone();
    // The broadcasts come from the caller: every client expects ids 0..messages.
    rec.max_id.store(ctx.args.messages, Ordering::Relaxed);
    rec.sent.store(ctx.args.messages, Ordering::Relaxed);
    let conns = ctx.connect_all(n, Vec::new()).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stats = Arc::new(Reconnects::default());
    let mut tasks = Vec::with_capacity(conns.len());
    for (i, conn) in conns.into_iter().enumerate() {
        if let Some(conn) = conn {
            let (ctx, stop, stats) = (ctx.clone(), stop_rx.clone(), stats.clone());
            tasks.push(tokio::spawn(keep(ctx, i as u64, conn, stop, stats)));
        }
    }
    let load_started = Instant::now();
    let limit = Duration::from_secs_f64(ctx.args.duration.max(0.0));
    while load_started.elapsed() < limit && !ctx.args.stop_file.as_ref().is_some_and(|f| f.exists())
    {
        tokio::time::sleep(STOP_POLL).await;
    }
    ctx.note_load(load_started);
    ctx.note_held();
    ctx.drain(ctx.args.messages * n).await;
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    let mut samples = std::mem::take(&mut *stats.samples.lock().unwrap_or_else(|e| e.into_inner()));
    samples.sort_unstable();
    ctx.percentiles("reconnect_ms", &samples);
    // Millisecond resolution (round2 of Unix seconds would keep only 10 ms).
    let secs = |us: u64| (us / 1000) as f64 / 1000.0;
    ctx.extra(
        "reconnects",
        json!({
            "dropped": rec.dropped.load(Ordering::Relaxed),
            "reconnected": stats.done.load(Ordering::Relaxed),
            "failed_attempts": stats.failed_attempts.load(Ordering::Relaxed),
            // Unix seconds; merged over shards by maximum (`_s`).
            "last_reauthenticated_at_s": secs(stats.last_at_us.load(Ordering::Relaxed)),
        }),
    );
    ctx.extra(
        "latency_is",
        json!("server-API broadcast (t in its data) → room:msg at each held client"),
    );
}

/// Hold client `i` until `stop`; reconnect it whenever the server drops it.
async fn keep(
    ctx: Arc<Ctx>,
    i: u64,
    mut conn: Conn,
    mut stop: watch::Receiver<bool>,
    stats: Arc<Reconnects>,
) {
    let user = ctx.user(i);
    loop {
        tokio::select! {
            _ = conn.closed() => {}
            _ = stop.changed() => return,
        }
        let dropped = Instant::now();
        let mut attempt = 0u32;
        conn = loop {
            let wait = Duration::from_millis(backoff_ms(attempt, rand::random()));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            let server = match ctx.args.reconnect_to.as_slice() {
                [] => ctx.target.servers[ctx.node_of(i) as usize],
                to => to[((i + u64::from(attempt)) % to.len() as u64) as usize],
            };
            attempt += 1;
            // An attempt may wait up to --connect-timeout: the stop must not.
            let connected = tokio::select! {
                connected = ctx.try_connect(&user, i, server, &[]) => connected,
                _ = stop.changed() => return,
            };
            match connected {
                Ok(conn) => break conn,
                Err(_) => {
                    stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        stats.done.fetch_add(1, Ordering::Relaxed);
        stats.last_at_us.fetch_max(now_micros(), Ordering::Relaxed);
        stats
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(dropped.elapsed().as_micros() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_socket_io_client() {
        // rand 0.0: first decimal 0 (even) → down by 0.
        assert_eq!(backoff_ms(0, 0.0), 1000);
        // rand 0.1: odd → up by 0.1 · 0.5 · 1000.
        assert_eq!(backoff_ms(0, 0.1), 1050);
        // rand 0.2: even → down by 100.
        assert_eq!(backoff_ms(0, 0.2), 900);
        assert_eq!(backoff_ms(1, 0.0), 2000);
        assert_eq!(backoff_ms(2, 0.0), 4000);
        // Capped after the jitter: 4000 + 0.9·0.5·4000 = 5800 → 5000.
        assert_eq!(backoff_ms(2, 0.9), 5000);
        assert_eq!(backoff_ms(40, 0.35), 5000);
        for attempt in 0..10 {
            for k in 0..100 {
                let ms = backoff_ms(attempt, f64::from(k) / 100.0);
                assert!((500..=5000).contains(&ms), "{attempt} {k}: {ms}");
            }
        }
    }
}
