//! `soak`: churn, relay and room emits at the same time for D seconds, to find what a long
//! mixed load leaves behind (the `bench/soak` script compares the server before and after).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::json;

use crate::stats::payload;
use crate::{Ctx, paced, pick_peer};

/// Run the soak scenario: N stable clients (all members of one room) relay `signal`s at R/s
/// while member 0 emits to the room once a second and short-lived clients churn.
pub async fn run(ctx: &Arc<Ctx>) {
    let n = ctx.args.connections;
    if n < 2 {
        ctx.rec.error("soak needs at least 2 connections");
        return;
    }
    let room_name = ctx.room();
    let conns = ctx.connect_all(n, vec![room_name.clone()]).await;
    let users: Vec<String> = (0..n).map(|i| ctx.user(i)).collect();
    let servers = ctx.target.servers.len() as u64;
    let duration = Duration::from_secs_f64(ctx.args.duration.max(0.0));
    let rec = ctx.rec.clone();
    let Some(room) = rec.room.as_deref() else {
        ctx.rec.error("soak: no room tracker");
        return;
    };
    let churn_latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut churn_tasks = Vec::new();
    let mut rng = rand::rng();
    let load_started = Instant::now();

    let relay = paced(ctx.args.rate, u64::MAX, duration, |id| {
        let from = rng.random_range(0..n);
        let to = pick_peer(&mut rng, from, n, servers, false);
        let (Some(sender), Some(_)) = (&conns[from as usize], &conns[to as usize]) else {
            return;
        };
        rec.max_id.fetch_max(id + 1, Ordering::Relaxed);
        rec.sent.fetch_add(1, Ordering::Relaxed);
        sender.emit(
            "signal",
            json!({ "to": users[to as usize], "data": payload(id) }),
        );
    });
    let emits = paced(1.0, u64::MAX, duration, |id| {
        let Some(Some(emitter)) = conns.first() else {
            return;
        };
        room.max_id.fetch_max(id + 1, Ordering::Relaxed);
        room.sent.fetch_add(1, Ordering::Relaxed);
        emitter.emit(
            "room:emit",
            json!({ "room": room_name, "data": payload(id) }),
        );
    });
    let churn = paced(ctx.args.churn_rate, u64::MAX, duration, |k| {
        let ctx = ctx.clone();
        let latencies = churn_latencies.clone();
        ctx.activity.churn_started.fetch_add(1, Ordering::Relaxed);
        churn_tasks.push(tokio::spawn(async move {
            // Their own user ids: a churn client must not receive the stable users' signals.
            let user = format!("{}-c{k}", ctx.tag);
            let begun = Instant::now();
            if let Some(conn) = ctx.connect_as(&user, k, &[]).await {
                let micros = begun.elapsed().as_micros() as u64;
                latencies
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(micros);
                conn.close();
                ctx.activity.churn_done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    });
    let (relayed, emitted, churned) = tokio::join!(relay, emits, churn);
    ctx.note_load(load_started);
    for task in churn_tasks {
        let _ = task.await;
    }
    // Closed churn clients end their tasks asynchronously; wait for them before counting.
    let settle = Instant::now() + Duration::from_secs(5);
    while rec.alive.load(Ordering::Relaxed) > n as i64 && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ctx.note_held();

    let deadline = Instant::now() + Duration::from_secs_f64(ctx.args.drain.max(0.0));
    let done = || {
        rec.delivered.load(Ordering::Relaxed) >= rec.sent.load(Ordering::Relaxed)
            && room.delivered.load(Ordering::Relaxed)
                >= room.sent.load(Ordering::Relaxed) * room.members
    };
    while !done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let churn_done = ctx.activity.churn_done.load(Ordering::Relaxed);
    say!("soak done: {relayed} signals, {emitted} room emits, {churn_done}/{churned} churn cycles");
    let tracked = |t: &crate::stats::Recorder| {
        let sent = t.sent.load(Ordering::Relaxed);
        let delivered = t.delivered.load(Ordering::Relaxed);
        json!({
            "sent": sent,
            "expected_deliveries": sent * t.members,
            "delivered": delivered,
            "lost": (sent * t.members).saturating_sub(delivered),
            "duplicated": t.duplicated.load(Ordering::Relaxed),
            "unexpected": t.unexpected.load(Ordering::Relaxed),
        })
    };
    ctx.extra("relay", tracked(&rec));
    ctx.extra("room", tracked(room));
    ctx.extra("room_members", json!(n));
    ctx.extra(
        "churn",
        json!({ "attempted": churned, "completed": churn_done, "failed": churned - churn_done }),
    );
    let mut latencies = churn_latencies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    latencies.sort_unstable();
    ctx.percentiles("churn_connect_ms", &latencies);
    ctx.percentiles("room_latency_ms", &room.sorted_latencies());
    ctx.extra(
        "latency_is",
        json!("latency_ms: relay send → signal received; room_latency_ms: room:emit → room:msg per member; churn_connect_ms: connect + CONNECT + authenticated"),
    );
    drop(conns);
}
